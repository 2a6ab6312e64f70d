"""``distill eval compare``: several eval runs side by side, one of them the reference
("teacher"): a markdown and an HTML table, ``compare.json`` and PNG plots (accuracy with
intervals, accuracy vs parameters, accuracy vs tokens per answer, the quality/size Pareto
front). With held-out texts it adds logit-level teacher-student divergence and speed."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from distill import io
from distill.errors import DistillError
from distill.eval import metrics as M
from distill.folders import claim

KIND = "compare"


@dataclass
class Run:
    label: str
    path: Path
    metrics: dict
    items: dict[str, dict]  # id -> per-item row


def load_run(path: str | Path) -> Run:
    path = Path(path)
    mfile = path / "metrics.json"
    if not mfile.is_file():
        raise DistillError(f"{path}: no metrics.json; not a `distill eval` output folder")
    try:
        metrics = json.loads(mfile.read_text())
    except json.JSONDecodeError as e:
        raise DistillError(f"{mfile}: not valid JSON: {e.msg}") from None
    items = {r["id"]: r for r in io.read_rows(path)}
    if not items:
        raise DistillError(f"{path}: no per-item rows under {path / io.DATA_DIR}")
    return Run(path.name, path, metrics, items)


def compare(run_dirs: list[str | Path], out: str | Path, *, teacher: str | Path | None = None,
            texts: str | Path | None = None, max_texts: int = 64, max_length: int = 256,
            bootstrap: int = M.BOOTSTRAP_SAMPLES, seed: int = 0,
            labels: list[str] | None = None, overwrite: bool = False) -> dict:
    """Compare eval runs; ``teacher`` (default: the first run) is the reference for
    retention (student / teacher accuracy on shared items, paired bootstrap interval) and
    answer agreement. ``texts`` (a .txt/.jsonl/... file of held-out texts) adds logit
    divergence between the teacher's and each student's model. Writes ``out``/compare.md,
    compare.html, compare.json and the plots (``out`` is claimed: see ``distill.folders``);
    returns what compare.json holds. ``labels`` name the runs of ``run_dirs`` (default: their
    folder names)."""
    if not run_dirs:
        raise DistillError("eval compare needs at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    for run, label in zip(runs, labels or []):
        run.label = label
    if teacher is not None and Path(teacher).resolve() not in [r.path.resolve() for r in runs]:
        runs.insert(0, load_run(teacher))
    ref = runs[0] if teacher is None else next(
        r for r in runs if r.path.resolve() == Path(teacher).resolve())
    _unique_labels(runs)
    out = Path(out)
    with claim(out, "eval compare", KIND, marker="compare.json",
               inputs=[*run_dirs, teacher, texts], overwrite=overwrite):
        return _compare(runs, ref, out, texts, max_texts, max_length, bootstrap, seed)


def _compare(runs: list[Run], ref: Run, out: Path, texts, max_texts: int, max_length: int,
             bootstrap: int, seed: int) -> dict:
    rows = []
    for run in runs:
        m = run.metrics
        row = {"run": run.label, "path": str(run.path), "teacher": run is ref,
               **{k: m.get(k) for k in ("model", "prompt", "shots", "task", "params", "items",
                                        "accuracy", "accuracy_ci", "format_compliance",
                                        "mean_tokens", "truncated", "pass@k", "maj@k",
                                        "backend")},
               "tokens_per_second": (m.get("speed") or {}).get("tokens_per_second")}
        if run is not ref:
            row.update(_versus(run, ref, bootstrap, seed))
        rows.append(row)
    result = {"kind": KIND, "teacher": ref.label, "runs": rows,
              "pareto": pareto_front([(r["run"], r["params"], r["accuracy"]) for r in rows])}
    if texts is not None:
        from distill.eval.divergence import divergence

        result["divergence"] = [
            {"student": run.label, **divergence(ref.metrics.get("model_path"),
                                                run.metrics.get("model_path"), texts,
                                                max_texts=max_texts, max_length=max_length)}
            for run in runs if run is not ref]
    from distill.eval.plots import write_plots

    result["plots"] = write_plots(rows, result["pareto"], out)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compare.md").write_text(to_markdown(result))
    (out / "compare.html").write_text(to_html(result))
    return result


def _versus(run: Run, ref: Run, bootstrap: int, seed: int) -> dict:
    shared = [i for i in ref.items if i in run.items]
    if not shared:
        return {"shared_items": 0, "retention": None, "retention_ci": None,
                "agreement": None}
    s = [float(bool(run.items[i]["correct"])) for i in shared]
    t = [float(bool(ref.items[i]["correct"])) for i in shared]
    both = sum(a and b for a, b in zip(s, t))
    return {"shared_items": len(shared),
            **M.retention(s, t, samples=bootstrap, seed=seed),
            "agreement": M.agreement([run.items[i]["answer"] for i in shared],
                                     [ref.items[i]["answer"] for i in shared]),
            "both_correct": int(both), "only_teacher": int(sum(t) - both),
            "only_student": int(sum(s) - both),
            "neither": int(len(shared) - sum(s) - sum(t) + both)}


def pareto_front(points: list[tuple[str, int | None, float]]) -> list[str]:
    """Labels of the runs no other run beats on both size and accuracy (fewer or equal
    parameters and higher or equal accuracy, one of them strictly). Runs without a
    parameter count are left out."""
    known = [(lab, p, a) for lab, p, a in points if p is not None]
    return [lab for lab, p, a in known
            if not any(p2 <= p and a2 >= a and (p2 < p or a2 > a) for _, p2, a2 in known)]


def _unique_labels(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.label in seen:
            run.label = f"{run.path.parent.name}/{run.path.name}"
        seen[run.label] = seen.get(run.label, 0) + 1


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ci(value, ci) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _params(p) -> str:
    if p is None:
        return "-"
    return f"{p / 1e9:.2f}B" if p >= 1e9 else f"{p / 1e6:.1f}M" if p >= 1e6 else f"{p / 1e3:.1f}K"


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of strings (shared by markdown and HTML)."""
    runs = result["runs"]
    ks = sorted({k for r in runs for k in (r.get("pass@k") or {})}, key=int)
    header = ["run", "model", "prompt", "params", "items", "accuracy [95% CI]", "format",
              "tokens/answer", "truncated", "tokens/s",
              *[f"pass@{k}" for k in ks], *[f"maj@{k}" for k in ks],
              f"retention vs {result['teacher']} [95% CI]", "Δ accuracy [95% CI]", "agreement"]
    body = []
    for r in runs:
        body.append([
            r["run"] + (" (teacher)" if r["teacher"] else ""), Path(str(r["model"])).name,
            str(r["prompt"]) + (f" ({r['shots']}-shot)" if r.get("shots") is not None else ""),
            _params(r["params"]), str(r["items"]),
            _ci(r["accuracy"], r["accuracy_ci"]), _fmt(r["format_compliance"]),
            _fmt(r["mean_tokens"], 1), _fmt(r["truncated"]), _fmt(r["tokens_per_second"], 1),
            *[_fmt((r.get("pass@k") or {}).get(k)) for k in ks],
            *[_fmt((r.get("maj@k") or {}).get(k)) for k in ks],
            "-" if r["teacher"] else _ci(r.get("retention"), r.get("retention_ci")),
            "-" if r["teacher"] else _ci(r.get("difference"), r.get("difference_ci")),
            "-" if r["teacher"] else _fmt(r.get("agreement"))])
    return header, body


def _divergence_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["student", "tokens", "KL(teacher‖student)", "JS", "top-1 agreement",
              "top-10 overlap", "teacher tokens/s", "student tokens/s", "note"]
    body = [[d["student"], _fmt(d.get("tokens")), _fmt(d.get("kl"), 4), _fmt(d.get("js"), 4),
             _fmt(d.get("top1_agreement")), _fmt(d.get("top10_overlap")),
             _fmt(d.get("teacher_tokens_per_second"), 1),
             _fmt(d.get("student_tokens_per_second"), 1), d.get("note") or ""]
            for d in result.get("divergence", [])]
    return header, body


def _notes(result: dict) -> list[str]:
    method = next((r["method"] for r in result["runs"] if r.get("method")), None)
    notes = ["accuracy: greedy decoding, one answer per item; interval: Wilson score, 95%."]
    if method:
        notes.append(f"retention = student accuracy / teacher accuracy on the items both runs "
                     f"share; Δ accuracy = student - teacher; intervals: {method}.")
        notes.append("agreement: share of shared items where both runs gave the same final "
                     "answer.")
    if any(r.get("pass@k") for r in result["runs"]):
        notes.append("pass@k: unbiased estimator of Chen et al. (2021) from n samples; maj@k: "
                     "majority vote, averaged over k-subsets of the n samples.")
    notes.append("Pareto front (fewest parameters for the accuracy): "
                 + (", ".join(result["pareto"]) or "-"))
    return notes


def to_markdown(result: dict) -> str:
    header, body = table(result)
    lines = ["# distill eval compare", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += [""] + [f"- {n}" for n in _notes(result)]
    for r in result["runs"]:
        if not r["teacher"] and r.get("shared_items"):
            lines.append(f"- {r['run']} vs {result['teacher']} on {r['shared_items']} items: "
                         f"both correct {r['both_correct']}, only teacher {r['only_teacher']}, "
                         f"only student {r['only_student']}, neither {r['neither']}.")
    if result.get("divergence"):
        dh, db = _divergence_rows(result)
        lines += ["", "## Teacher-student divergence (held-out texts)", "",
                  "| " + " | ".join(dh) + " |", "|" + "---|" * len(dh)]
        lines += ["| " + " | ".join(row) + " |" for row in db]
    lines += ["", *[f"![{Path(p).stem}]({Path(p).name})" for p in result["plots"]], ""]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


STYLE = ("<!doctype html><html><head><meta charset='utf-8'><title>distill eval compare"
         "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
         "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:4px}"
         "</style></head><body>")


def to_html(result: dict) -> str:
    parts = [STYLE + "<h1>distill eval compare</h1>",
             _html_table(*table(result)), "<ul>"]
    parts += [f"<li>{html.escape(n)}</li>" for n in _notes(result)] + ["</ul>"]
    if result.get("divergence"):
        parts += ["<h2>Teacher-student divergence (held-out texts)</h2>",
                  _html_table(*_divergence_rows(result))]
    parts += [f"<img src='{html.escape(Path(p).name)}' alt='{html.escape(Path(p).stem)}'>"
              for p in result["plots"]]
    parts.append("</body></html>\n")
    return "\n".join(parts)
