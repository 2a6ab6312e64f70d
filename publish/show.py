"""``distill show``: what is in a dataset folder, read once (``load_view``) and summarized in
the terminal (``summary``); ``distill.publish.page`` writes the same view as an HTML page.

DIR may be a filter output (``kept/`` + ``dropped/`` + ``report.json``), or any data
``distill.data.read`` takes: a dataset folder (e.g. a generate output or ``kept/`` itself), a
published folder (its ``--split``), files or a hub id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill import io
from distill.data import read
from distill.log import pct
from distill.publish.lengths import describe, lengths
from distill.publish.lineage import funnel
from distill.publish.splits import SPLIT_ORDER


@dataclass
class View:
    """Rows of DIR, each with ``_status`` (kept, dropped or None) and ``_split``."""

    path: Path
    kind: str
    rows: list[dict]
    columns: list[tuple[str, str]]
    chain: list[dict]
    funnel: dict | None
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["_status"] == status)


def load_view(path: str | Path, options: dict | None = None) -> View:
    """The rows of ``path``: a filter output's kept and dropped rows, or anything
    ``distill.data.read`` takes (``options``: its split, subset, revision and fields)."""
    p = Path(path)
    options = options or {}
    if io.shard_paths(p / "kept"):
        parts = [(read(p / "kept", fields=options.get("fields")), "kept")]
        if (p / "dropped").is_dir():
            parts.append((read(p / "dropped", fields=options.get("fields")), "dropped"))
        kind, chain_of = "filter output", parts[0][0]
    else:
        data = read(p, **options)
        parts, kind, chain_of = [(data, None)], data.kind, data
    rows = []
    for data, status in parts:
        split = data.split if data.kind == "published dataset" else None
        rows += [{**r, "_status": status, "_split": split} for r in data.dataset.to_list()]
    schema = parts[0][0].dataset.features.arrow_schema
    columns = [(name, str(t)) for name, t in zip(schema.names, schema.types)]
    chain = io.lineage(chain_of.manifest)
    filtered = any(m.get("kind") == "filter" for m in chain)
    for r in rows:
        if r["_status"] is None:
            r["_status"] = "dropped" if r.get("dropped_by") else "kept" if filtered else None
    fun = funnel(chain)
    report = p / "report.json"
    if report.exists():
        data = json.loads(report.read_text())
        fun = {"rows_in": data["rows_in"], "kept": data["kept"], "stages": data["stages"]}
    reasons: dict[str, int] = {}
    for r in rows:
        if r.get("dropped_by"):
            key = drop_reason(r)
            reasons[key] = reasons.get(key, 0) + 1
    reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    return View(p, kind, rows, columns, chain, fun, reasons)


def drop_reason(row: dict) -> str:
    return f"{row['dropped_by']}: {row.get('drop_reason')}" if row.get("dropped_by") else ""


def texts(row: dict) -> tuple[str, str]:
    """(prompt, completion) of a row in any format distill writes."""
    def last(turns, roles, key="role", value="content"):
        return next((t[value] for t in reversed(turns or []) if t.get(key) in roles), "")

    if isinstance(row.get("completion"), str):
        return last(row.get("messages"), {"user"}) or str(row.get("question") or ""), \
            row["completion"]
    if isinstance(row.get("completion"), list):  # conversational prompt-completion
        return last(row.get("prompt"), {"user"}), last(row["completion"], {"assistant"})
    if row.get("messages"):
        return last(row["messages"], {"user"}), last(row["messages"], {"assistant"})
    if "output" in row:
        return "\n\n".join(x for x in (row.get("instruction"), row.get("input")) if x), \
            str(row["output"] or "")
    if row.get("conversations"):
        conv = row["conversations"]
        return last(conv, {"human", "user"}, "from", "value"), \
            last(conv, {"gpt", "assistant"}, "from", "value")
    return str(row.get("question") or ""), ""


def row_lengths(rows: list[dict]) -> dict[str, list[int]]:
    def with_text(r):
        prompt, completion = texts(r)
        return {"completion": completion, "tokens": r.get("tokens"),
                "prompt_tokens": r.get("prompt_tokens"),
                "messages": [{"content": prompt}] if not r.get("messages") else r["messages"]}

    return lengths([with_text(r) for r in rows])


# --- terminal ----------------------------------------------------------------------------

def summary(path: str | Path, samples: int = 3, options: dict | None = None) -> str:
    v = load_view(path, options)
    n = len(v.rows)
    counts = f" ({v.count('kept')} kept, {v.count('dropped')} dropped)" if v.count("dropped") \
        or v.kind == "filter output" else ""
    splits = sorted({r["_split"] for r in v.rows if r["_split"]},
                    key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))
    if splits:
        counts += " (" + ", ".join(f"{s} {sum(1 for r in v.rows if r['_split'] == s)}"
                                   for s in splits) + ")"
    lines = [f"{v.path}: {v.kind}, {n} rows{counts}"]
    gen = next((m for m in v.chain if m.get("kind") == "generate"), {})
    if gen:
        prompt = gen.get("prompt") or {}
        lines.append(f"teacher: {gen.get('model', '?')}   prompt: {prompt.get('name', '?')} "
                     f"({prompt.get('kind', '?')})   source: "
                     f"{(gen.get('source') or {}).get('path', '?')}")
    lines.append(f"columns ({len(v.columns)}): " + ", ".join(f"{c} {t}" for c, t in v.columns))
    if v.funnel:
        rows_in = v.funnel["rows_in"]
        lines += ["funnel:", f"  {'input':<16}{rows_in:>8}"]
        for s in v.funnel["stages"]:
            top = ", ".join(f"{r} ({c})" for r, c in list((s.get("reasons") or {}).items())[:3])
            lines.append(f"  {s['stage']:<16}{s['kept']:>8}  {pct(s['kept'], rows_in):>6}  "
                         f"-{s['dropped']:<6} {top}")
    if v.reasons:
        lines.append("drop reasons:")
        lines += [f"  {c:>6}  {r}" for r, c in v.reasons.items()]
    shown = [r for r in v.rows if r["_status"] != "dropped"] or v.rows
    for metric, values in row_lengths(shown).items():
        d = describe(values)
        lines.append(f"{metric}: min {d['min']}, median {d['median']}, mean {d['mean']}, "
                     f"p90 {d['p90']}, max {d['max']}")
    picks = _pick_samples(v.rows, samples)
    if picks:
        lines.append("samples:")
    for r in picks:
        prompt, completion = texts(r)
        tag = r["_status"] or r["_split"] or "row"
        reason = drop_reason(r)
        lines.append(f"  [{tag}] {r.get('id', '')}" + (f"  ({reason})" if reason else ""))
        lines.append(f"    prompt:     {_one_line(prompt, 160)}")
        lines.append(f"    completion: {_one_line(completion, 300)}")
    return "\n".join(lines)


def _pick_samples(rows: list[dict], k: int) -> list[dict]:
    """Up to ``k`` kept rows of distinct problems, then one dropped row for each of the two
    most common drop reasons."""
    kept, problems = [], set()
    for r in rows:
        pid = r.get("source_id") or r.get("id")
        if r["_status"] != "dropped" and pid not in problems and len(kept) < k:
            problems.add(pid)
            kept.append(r)
    dropped, reasons = [], set()
    for r in rows:
        reason = drop_reason(r)
        if k and r["_status"] == "dropped" and reason not in reasons and len(dropped) < 2:
            reasons.add(reason)
            dropped.append(r)
    return kept + dropped


def _one_line(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"
