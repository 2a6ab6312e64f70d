"""The training card: ``README.md`` and ``loss.png`` next to the student."""

from __future__ import annotations

import json
from pathlib import Path

from distill import io


def write_card(out: Path, *, model: str, data: Path, manifest: dict | None, config, report,
               eval_report, metrics: dict, log_history: list[dict], seconds: float,
               resumed_from: str | None, command: str = "distill train sft",
               objective: list[str] = ()) -> Path:
    out = Path(out)
    plotted = plot_losses(log_history, out / "loss.png")
    rw, aw = config.span_weights()
    lines = [f"# {out.name}", "",
             f"A student fine-tuned by `{command}` from `{model}` on `{data}`.", "",
             "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             f'model = AutoModelForCausalLM.from_pretrained("{out}")',
             f'tokenizer = AutoTokenizer.from_pretrained("{out}")', "```", ""]
    if config.objective == "step_by_step":
        lines += [(f"Trained for distilling step-by-step: put `{config.label_prefix}` before the "
                  f"question for the answer alone, `{config.rationale_prefix}` for the rationale."),
                  ""]
    if config.use_lora:
        lines += ["LoRA: the adapter is in `adapter/`" + (
            "; the folder holds the merged model." if config.merge_lora else "."), ""]
    lines += ["## Objective", "",
              (f"- objective: `{config.objective}`, loss normalization: "
              f"`{config.normalization()}`"),
              f"- weights: reasoning {rw:g}, answer {aw:g} (prompt tokens never count)",
              *objective, ""]
    lines += ["## Data", "", *lineage_lines(manifest, str(data)), "", "Checks before training:", ""]
    lines += [f"- {line.strip()}" for line in report.lines()]
    if eval_report is not None:
        lines += [f"- eval: {line.strip()}" for line in eval_report.lines()]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    losses = [h["loss"] for h in log_history if "loss" in h]
    if losses:
        lines += [f"| last logged train loss | {losses[-1]:.4g} |"]
    lines += [f"| wall time (s) | {seconds:.1f} |"]
    if resumed_from:
        lines += [f"| resumed from | {Path(resumed_from).name} |"]
    lines += [""]
    if plotted:
        lines += ["## Loss", "", "![loss curve](loss.png)", ""]
    lines += ["## Arguments", "", ("The settings that shape the result; every argument is in "
              "`distill_sft.json`."), "", "| argument | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in key_arguments(config).items()]
    versions = io.package_versions(("distill", "torch", "transformers", "trl", "peft",
                                    "accelerate", "datasets"))
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def lineage_lines(manifest: dict | None, where: str) -> list[str]:
    """One line per stage, newest first, following ``input_manifest`` links."""
    if manifest is None:
        return [f"- `{where}`: no manifest.json (lineage unknown)"]
    lines = []
    for step in io.lineage(manifest)[:20]:
        kind = step.get("kind", "dataset")
        if kind == "generate":
            bits = [f"**generate** from `{(step.get('source') or {}).get('path')}`"]
        else:
            bits = [f"**{kind}** of `{step['input']}`" if step.get("input")
                    else f"**{kind}** `{where}`"]
        if step.get("model"):
            bits.append(f"model `{step['model']}`")
        prompt = step.get("prompt") or {}
        if prompt.get("name"):
            bits.append(f"prompt `{prompt['name']}` (sha256 {str(prompt.get('sha256'))[:12]})")
        if step.get("sampling"):
            bits.append(f"sampling `{json.dumps(step['sampling'], sort_keys=True)}`")
        if step.get("stages"):
            bits.append("stages " + ", ".join(
                f"{s.get('stage')} (-{s.get('dropped', 0)})" for s in step["stages"]))
        rows = step.get("rows", step.get("rows_planned"))
        if rows is not None:
            bits.append(f"{rows} rows")
        if step.get("created"):
            bits.append(f"created {step['created']}")
        lines.append("- " + ", ".join(bits))
    return lines


def key_arguments(config) -> dict:
    keys = (*config.resume_keys, "gradient_checkpointing", "on_truncated", "on_bad_row",
            "max_dropped_fraction")
    return {k: getattr(config, k) for k in keys}


def plot_losses(log_history: list[dict], path: Path) -> bool:
    steps = [h for h in log_history if "loss" in h and "step" in h]
    evals = [h for h in log_history if "eval_loss" in h]
    if not steps and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], label="train loss")
        for key in ("reasoning_nll", "answer_nll", "kd", "ce"):
            pts = [(h["step"], h[key]) for h in steps if key in h]
            if pts:
                ax.plot(*zip(*pts), label=key.replace("_", " "), alpha=0.7, linestyle="--")
    if evals:
        ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-",
                label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
