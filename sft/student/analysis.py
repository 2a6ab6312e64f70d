"""Numbers for two distillation choices: the temperature, and the student's size.

``temperature_profile``: how a teacher's next-token distributions look at several
temperatures on some texts (entropy, effective support, top-1/5/10 mass): what a KD loss at
that temperature asks the student to learn. ``compression_table``: eval runs of a teacher and
its students side by side as parameters, compression, accuracy, retention and speed-up.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.errors import DistillError
from distill.folders import claim

TOP_K = (1, 5, 10)


def temperature_profile(model: str | None, texts, *, temperatures=(0.5, 1.0, 2.0, 4.0, 8.0),
                        max_texts: int = 64, max_length: int = 256) -> dict:
    """Means over every next-token position of ``texts`` (a list, or a file/dataset folder for
    ``distill.eval.divergence.load_texts``) of the teacher's distribution at each temperature:
    entropy (nats), effective support ``exp(entropy)`` (the number of equally likely tokens with
    that entropy) and the probability mass of the top 1, 5 and 10 tokens."""
    import torch

    from distill.eval.divergence import load_texts
    from distill.models import DEFAULT_MODEL, load_model_and_tokenizer

    if not temperatures or any(t <= 0 for t in temperatures):
        raise DistillError(f"temperatures must be positive, got {list(temperatures)}")
    if not isinstance(texts, list):
        texts = load_texts(texts, max_texts)
    lm, tok = load_model_and_tokenizer(model)
    device = next(lm.parameters()).device
    sums = {t: {"entropy": 0.0, "effective_support": 0.0, **{f"top{k}": 0.0 for k in TOP_K}}
            for t in temperatures}
    tokens = 0
    with torch.inference_mode():
        for text in texts[:max_texts]:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length,
                      add_special_tokens=False)["input_ids"].to(device)
            if ids.shape[1] == 0:
                continue
            logits = lm(input_ids=ids).logits[0].float()
            logits = logits[:, :min(logits.shape[-1], len(tok))]
            for t in temperatures:
                for key, value in distribution_stats(logits / t).items():
                    sums[t][key] += value
            tokens += ids.shape[1]
    if not tokens:
        raise DistillError("temperature profile: the texts hold no tokens")
    rows = [{"temperature": t, **{k: v / tokens for k, v in sums[t].items()}}
            for t in temperatures]
    return {"model": str(model or DEFAULT_MODEL), "texts": min(len(texts), max_texts),
            "tokens": tokens, "vocab": int(logits.shape[-1]), "temperatures": rows}


def distribution_stats(logits):
    """Sums over positions of [positions, vocab] ``logits``: entropy, exp(entropy), top-k mass."""
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    top = p.topk(min(max(TOP_K), p.shape[-1]), dim=-1).values.cumsum(-1)
    return {"entropy": float(entropy.sum()), "effective_support": float(entropy.exp().sum()),
            **{f"top{k}": float(top[:, min(k, top.shape[-1]) - 1].sum()) for k in TOP_K}}


def temperatures_markdown(profile: dict) -> str:
    lines = [f"# Teacher distribution by temperature: {profile['model']}", "",
             (f"{profile['tokens']} next-token positions of {profile['texts']} texts; vocabulary "
             f"{profile['vocab']}."), "",
             "| T | entropy (nats) | effective support | top-1 mass | top-5 mass | top-10 mass |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['temperature']:g} | {r['entropy']:.3f} | {r['effective_support']:.1f} | "
              f"{r['top1']:.3f} | {r['top5']:.3f} | {r['top10']:.3f} |"
              for r in profile["temperatures"]]
    lines += ["", ("Effective support: exp(entropy) per position, averaged. A KD loss at "
              "temperature T trains the student on these distributions; as T grows, mass moves "
              "from the top tokens to the tail.")]
    return "\n".join(lines) + "\n"


def compression_table(run_dirs, *, teacher=None, bootstrap: int = 10_000, seed: int = 0) -> dict:
    """``distill eval`` runs of a teacher (``teacher``, else the first run) and its students:
    parameters, compression (teacher params / params), accuracy, retention (accuracy / the
    teacher's on shared items, paired bootstrap interval) and speed-up (generation tokens/s /
    the teacher's)."""
    from distill.eval import metrics as M
    from distill.eval.compare import load_run

    if not run_dirs:
        raise DistillError("compression table needs at least one eval run folder")
    paths = [Path(d) for d in run_dirs]
    if teacher is not None:  # the teacher first, once
        paths = [Path(teacher)] + [p for p in paths if p.resolve() != Path(teacher).resolve()]
    runs = [load_run(p) for p in paths]
    ref = runs[0]
    t_params, t_speed = ref.metrics.get("params"), _speed(ref)
    rows = []
    for run in runs:
        m, params, speed = run.metrics, run.metrics.get("params"), _speed(run)
        row = {"run": str(run.path), "teacher": run is ref, "model": m.get("model"),
               "backend": m.get("backend"), "params": params,
               "compression": t_params / params if t_params and params else None,
               "accuracy": m.get("accuracy"), "items": m.get("items"),
               "tokens_per_second": speed,
               "speedup": speed / t_speed if speed and t_speed else None,
               "retention": None, "retention_ci": None}
        shared = [i for i in ref.items if i in run.items]
        if run is not ref and shared:
            r = M.retention([float(bool(run.items[i]["correct"])) for i in shared],
                            [float(bool(ref.items[i]["correct"])) for i in shared],
                            samples=bootstrap, seed=seed)
            row.update(retention=r["retention"], retention_ci=r["retention_ci"],
                       shared_items=len(shared))
        rows.append(row)
    notes = []
    if len({r["backend"] for r in rows}) > 1:
        notes.append("the runs used different generation backends: speed-ups mix engines.")
    return {"teacher": str(ref.path), "runs": rows, "notes": notes}


def _speed(run) -> float | None:
    return (run.metrics.get("speed") or {}).get("tokens_per_second")


def compression_markdown(table: dict) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["# Compression", "", ("| run | params | compression | accuracy | retention [95% CI] "
             "| tokens/s | speed-up |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table["runs"]:
        ret = "-" if r["teacher"] else f(r["retention"], ".3f") + (
            f" [{r['retention_ci'][0]:.3f}, {r['retention_ci'][1]:.3f}]"
            if r["retention_ci"] else "")
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.2f}M"
        lines.append(f"| {Path(r['run']).name}{' (teacher)' if r['teacher'] else ''} | {params} "
                     f"| {f(r['compression'], '.2f')}x | {f(r['accuracy'], '.3f')} | {ret} | "
                     f"{f(r['tokens_per_second'], '.1f')} | {f(r['speedup'], '.2f')}x |")
    lines += ["", ("compression = teacher params / params; retention = accuracy / the teacher's "
              "on the items both runs share (paired bootstrap); speed-up = generation tokens/s / "
              "the teacher's (compare runs from one machine and backend).")]
    lines += [f"note: {n}" for n in table["notes"]]
    return "\n".join(lines) + "\n"


def write_analysis(out: str | Path, name: str, data: dict, markdown: str, *, inputs=(),
                   overwrite: bool = False) -> Path:
    """``out``/``name``.json (``"kind": name``) and ``name``.md, in a folder ``distill analyze
    name`` claims (see ``distill.folders``); returns the markdown path."""
    out = Path(out)
    with claim(out, f"analyze {name}", name, marker=f"{name}.json", inputs=inputs,
               overwrite=overwrite):
        (out / f"{name}.json").write_text(json.dumps({"kind": name, **data}, indent=2) + "\n")
        (out / f"{name}.md").write_text(markdown)
    return out / f"{name}.md"
