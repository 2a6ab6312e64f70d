"""``distill eval``: generate answers for a task's items with ``distill.datagen.generate`` (so a
run is resumable and carries its provenance), then score them.

An eval folder holds:

- ``items.jsonl``: the task rows evaluated (``id``, ``question``, ``answer``);
- ``generations/greedy`` (and ``generations/samples`` with ``n`` > 1): the generate datasets;
- ``data/part-*.parquet`` + ``manifest.json``: the per-item dataset, one row per item;
- ``metrics.json``: the run's numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from distill import io
from distill.answers import extract_gold, is_correct
from distill.datagen import generate, load_prompt
from distill.datagen.backends import (
    Backend,
    Sampling,
    backend_options_for,
    check_number,
    get_backend,
)
from distill.errors import DistillError
from distill.eval import metrics as M
from distill.folders import claim
from distill.models import DEFAULT_MODEL, count_parameters, model_files, resolve_model
from distill.tasks import default_split, load_task

GREEDY, SAMPLES = "greedy", "samples"
DEFAULT_PROMPTS = {"cot": "gsm8k-cot", "pot": "gsm8k-pot"}
SAMPLING_TEMPERATURE = 0.7  # for n > 1 when the prompt file's own temperature is 0


@dataclass
class EvalResult:
    out: Path
    metrics: dict

    def summary(self) -> str:
        m = self.metrics
        lo, hi = m["accuracy_ci"]
        lines = [(f"{self.out}: {m['task']} ({m['items']} items), {m['model']}, prompt "
                  f"{m['prompt']} ({m.get('shots', 0)}-shot)"),
                 (f"accuracy {m['accuracy']:.3f} [95% CI {lo:.3f}-{hi:.3f}]  format "
                  f"{m['format_compliance']:.3f}  tokens/answer {m['mean_tokens']:.1f}")]
        if m.get("pass@k"):
            lines.append("  ".join([f"pass@{k} {v:.3f}" for k, v in m["pass@k"].items()]
                                   + [f"maj@{k} {v:.3f}" for k, v in m["maj@k"].items()]))
        return "\n".join(lines)


def evaluate(model: str | None, task: str, out: str | Path, *, prompt: str | None = None,
             n: int = 1, limit: int | None = None, backend: str | Backend = "auto",
             base_url: str | None = None, max_tokens: int | None = None,
             temperature: float | None = None, seed: int = 0, split: str | None = None,
             batch_size: int | None = None, params: int | None = None,
             exec_timeout: float = 5.0, shots: int | None = None, regenerate: bool = False,
             backend_options: dict | None = None, engine_args: dict | None = None,
             progress: bool = True, fields: dict[str, str] | None = None, subset: str | None = None,
             revision: str | None = None, overwrite: bool = False) -> EvalResult:
    """Evaluate ``model`` (an HF folder, hub id, ``distill train`` output folder, a served
    model name with ``backend="openai"``, or None for the embedded default) on ``task`` (a
    benchmark name, or any data ``distill.data.read`` takes with question and answer
    columns): greedy accuracy, and with ``n`` > 1 also pass@k and maj@k from ``n`` samples.
    ``split`` (default: ``test`` for a benchmark, ``train`` for other data), ``subset``,
    ``revision`` and ``fields`` (``{"question": "problem"}``) say how the data is read;
    ``engine_args``: vLLM's ``EngineArgs`` fields for the vllm backend.
    Writes ``out`` (see the module docstring): a new or empty folder or an eval output
    (``overwrite``: move what else it holds aside)."""
    Sampling(**{k: v for k, v in {"n": n, "temperature": temperature, "max_tokens": max_tokens,
                                  "seed": seed}.items() if v is not None})  # checks them
    for name, value in (("limit", limit), ("batch_size", batch_size), ("params", params)):
        check_number(name, value, 1)
    options = backend_options_for(backend, base_url, batch_size, backend_options, engine_args)
    out = Path(out)
    split = split or default_split(task)
    rows = load_task(task, split=split, fields=fields, subset=subset, revision=revision,
                     limit=limit)
    if not rows:
        raise DistillError(f"{task}: no items to evaluate")
    pf = load_prompt(prompt or DEFAULT_PROMPTS["cot"]).with_shots(shots)
    if pf.kind not in ("cot", "pot"):
        raise DistillError(f"prompt {pf.name!r} is a {pf.kind!r} prompt; eval needs a cot or "
                           "pot prompt (e.g. gsm8k-cot, gsm8k-cot-8shot, gsm8k-pot)")
    inputs = [task, model if model and backend != "openai" else None]
    with claim(out, "eval", "eval", inputs=inputs, overwrite=overwrite):
        items_path = out / "items.jsonl"
        items_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

        if backend == "openai" and not model:
            raise DistillError("--backend openai needs --model: the model name the server serves")
        if isinstance(backend, Backend):
            model_path = model or backend.model
        else:
            model_path = model if backend == "openai" else resolve_eval_model(model)
        gen_model = model_path if model or isinstance(backend, Backend) else None
        max_tokens = max_tokens or pf.sampling.get("max_tokens")
        sample_t = temperature if temperature is not None else (
            pf.sampling.get("temperature") or SAMPLING_TEMPERATURE)
        passes = [(GREEDY, 1, 0.0)] + ([(SAMPLES, n, sample_t)] if n > 1 else [])
        todo = [p for p in passes if not _complete(out / "generations" / p[0],
                                                   len(rows) * p[1], gen_model)]
        engine = backend if isinstance(backend, Backend) or not todo else get_backend(
            backend, model_path, **options)  # one engine for both passes
        speed = {}
        try:
            for name, k, t in passes:
                res = generate(str(pf.path), str(items_path), str(out / "generations" / name),
                               model=gen_model, backend=engine, n=k, temperature=t,
                               max_tokens=max_tokens, seed=seed, shots=shots,
                               regenerate=regenerate, cache=True,
                               backend_options=options, progress=progress)
                if res.rows_written:
                    speed[name] = {"tokens": res.tokens, "seconds": round(res.seconds, 3),
                                   "tokens_per_second": round(res.tokens / res.seconds, 2)}
        finally:
            if isinstance(engine, Backend) and engine is not backend:
                engine.close()

        greedy = _by_item(out / "generations" / GREEDY, rows)
        samples = _by_item(out / "generations" / SAMPLES, rows) if n > 1 else {}
        score_rows([r for group in (*greedy.values(), *samples.values()) for r in group],
                   pf.kind, exec_timeout, progress)
        items = [_item_row(r, greedy[r["id"]][0], samples.get(r["id"], [])) for r in rows]
        old = _read_json(out / "metrics.json") or {}
        backend_name = engine.name if isinstance(engine, Backend) else old.get("backend", backend)
        metrics = {
            "task": str(task), "split": split, "prompt": pf.name, "shots": len(pf.few_shot),
            "kind": pf.kind,
            "model": str(model or (backend.model if isinstance(backend, Backend) else DEFAULT_MODEL)),
            "model_path": str(model_path) if model_path else None, "backend": backend_name,
            "params": params if params is not None else _engine_params(engine) or (
                None if backend_name == "openai" else _parameters(model_path)),
            "max_tokens": max_tokens, "n": n, "temperature": sample_t if n > 1 else 0.0,
            "seed": seed, **summarize(items, n),
            "speed": speed.get(GREEDY) or old.get("speed"),
            "created": io.now(), "versions": io.package_versions(),
        }
        _write_items(out, items, metrics)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return EvalResult(out, metrics)


def summarize(items: list[dict], n: int = 1) -> dict:
    """Run-level metrics from per-item rows (see ``_item_row``)."""
    total = len(items)
    correct = sum(1 for it in items if it["correct"])
    summary = {
        "items": total, "correct": correct, "accuracy": correct / total,
        "accuracy_ci": list(M.wilson_interval(correct, total)),
        "format_compliance": sum(it["format_ok"] for it in items) / total,
        "answered": sum(it["answer"] is not None for it in items) / total,
        "mean_tokens": sum(it["tokens"] for it in items) / total,
        "truncated": sum(it["finish_reason"] == "length" for it in items) / total,
    }
    if n > 1:
        ks = M.default_ks(n)
        summary["pass@k"] = {str(k): sum(M.pass_at_k(n, it["n_correct"], k) for it in items)
                             / total for k in ks}
        summary["maj@k"] = {str(k): sum(M.maj_at_k(it["sample_answers"], it["gold"], k)
                                        for it in items) / total for k in ks}
        summary["sample_accuracy"] = sum(it["n_correct"] for it in items) / (total * n)
        summary["sample_mean_tokens"] = sum(it["sample_tokens"] for it in items) / total
        summary["sample_format_compliance"] = sum(
            it["sample_format_ok"] for it in items) / (total * n)
    return summary


def resolve_eval_model(model: str | None) -> str:
    """A loadable model: None is the embedded default; a folder without ``config.json``
    (a ``distill train`` output) means its ``final``/``model`` subfolder or its latest
    ``checkpoint-N``."""
    if model is None or not Path(model).is_dir() or (Path(model) / "config.json").exists():
        return resolve_model(model)
    root = Path(model)
    for sub in ("final", "model"):
        if (root / sub / "config.json").exists():
            return str(root / sub)
    ckpts = sorted((p for p in root.glob("checkpoint-*") if (p / "config.json").exists()),
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit()
                   else -1)
    if ckpts:
        return str(ckpts[-1])
    raise DistillError(f"{model}: not a model folder (no config.json, no final/, model/ or "
                       "checkpoint-N/ with one)")


def execute_programs(rows: list[dict], timeout: float = 5.0, progress: bool = False) -> None:
    """Run the ``code`` of program-of-thought rows in the sandbox with the filters' execute
    stage (the same limits and the same rule: the last printed line is the answer); sets
    ``answer``, ``answer_format`` ("program") and ``exec``."""
    from distill.filters.execute import Execute

    todo = [r for r in rows if r.get("code") is not None]
    if todo:
        Execute(timeout=timeout, drop_failed=False, progress=progress).apply(todo)


def score_rows(rows: list[dict], kind: str = "cot", exec_timeout: float = 5.0,
               progress: bool = False) -> None:
    """Add ``answer``, ``answer_format``, ``format_ok``, ``correct`` (and for program-of-thought
    rows ``code`` and ``exec``) to generated rows holding ``completion`` and ``gold``."""
    for r in rows:
        r.update(M.score_completion(r["completion"], r["gold"], kind))
    if kind == "pot":
        execute_programs(rows, exec_timeout, progress)
        for r in rows:
            gold = extract_gold(r["gold"])
            r["format_ok"] = r["answer"] is not None
            r["correct"] = None if gold is None else (
                r["answer"] is not None and is_correct(r["answer"], gold))


def _item_row(task_row: dict, g: dict, samples: list[dict]) -> dict:
    row = {"id": task_row["id"], "question": task_row["question"],
           "gold": extract_gold(task_row.get("answer")), "completion": g["completion"],
           "answer": g["answer"], "answer_format": g["answer_format"],
           "format_ok": bool(g["format_ok"]), "correct": bool(g["correct"]),
           "tokens": int(g["tokens"]), "finish_reason": g["finish_reason"],
           "code": g.get("code"), "exec_error": (g.get("exec") or {}).get("stderr") or None}
    if samples:
        row.update(sample_answers=[s["answer"] for s in samples],
                   sample_correct=[bool(s["correct"]) for s in samples],
                   n_correct=sum(bool(s["correct"]) for s in samples),
                   sample_tokens=sum(s["tokens"] for s in samples) / len(samples),
                   sample_format_ok=sum(bool(s["format_ok"]) for s in samples))
    return row


def _by_item(folder: Path, rows: list[dict]) -> dict[str, list[dict]]:
    """The generated rows of each task item, in sample order."""
    wanted = {r["id"] for r in rows}
    groups: dict[str, list[dict]] = {}
    for r in io.read_rows(folder):
        if r["source_id"] in wanted:
            groups.setdefault(r["source_id"], []).append(r)
    missing = wanted - set(groups)
    if missing:
        raise DistillError(f"{folder}: no generations for item {min(missing)!r}")
    for group in groups.values():
        group.sort(key=lambda r: r["sample_index"])
    return groups


def _write_items(out: Path, items: list[dict], metrics: dict) -> None:
    io.write_dataset(out, pa.Table.from_pylist(items), {
        "kind": "eval", "created": metrics["created"], "task": metrics["task"],
        "prompt": metrics["prompt"], "model": metrics["model"], "rows": len(items),
        "generations": sorted(p.name for p in (out / "generations").iterdir()),
        "versions": metrics["versions"]}, len(items) or 1)


def _complete(folder: Path, expected: int, model: str | None) -> bool:
    """``folder`` holds every generation, made by ``model`` as its files are now."""
    manifest = io.read_manifest(folder)
    return bool(manifest and manifest.get("status") == "complete"
                and manifest.get("rows", 0) >= expected
                and manifest.get("row_key", {}).get("model_files") in (None, model_files(model)))


def _engine_params(engine) -> int | None:
    lm = getattr(engine, "lm", None)
    return int(sum(p.numel() for p in lm.parameters())) if lm is not None else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _parameters(model_path: str | None) -> int | None:
    """The model's parameter count for the report; None where it cannot be counted."""
    if not model_path:
        return None
    try:
        return count_parameters(model_path)
    except Exception:  # noqa: BLE001 - unknown architectures, offline hub ids: no count
        return None
