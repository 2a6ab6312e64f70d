"""Prompt and completion lengths of rows: the numbers and the histogram plot."""

from __future__ import annotations

import statistics
from pathlib import Path


def lengths(rows: list[dict]) -> dict[str, list[int]]:
    """Completion and prompt lengths: tokens where the rows count them, else characters."""
    def prompt_chars(r):
        return sum(len(m.get("content") or "") for m in r.get("messages") or [])

    out = {}
    if rows and all(r.get("tokens") is not None for r in rows):
        out["completion tokens"] = [int(r["tokens"]) for r in rows]
    else:
        out["completion characters"] = [len(r.get("completion") or "") for r in rows]
    if rows and all(r.get("prompt_tokens") is not None for r in rows):
        out["prompt tokens"] = [int(r["prompt_tokens"]) for r in rows]
    else:
        out["prompt characters"] = [prompt_chars(r) for r in rows]
    return out


def describe(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "mean": 0, "p90": 0, "max": 0}
    s = sorted(values)
    return {"min": s[0], "median": statistics.median(s), "mean": round(statistics.fmean(s), 1),
            "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1]}


def length_plot(path: Path, split_rows: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_split = {s: lengths(rs) for s, rs in split_rows.items()}
    metrics = list(next(iter(per_split.values())))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [per_split[s][metric] for s in per_split]
        ax.hist(data, bins=30, stacked=True, label=list(per_split))
        ax.set_xlabel(metric)
        ax.set_ylabel("rows")
        ax.set_title(metric.split()[0] + " length")
        if len(per_split) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
