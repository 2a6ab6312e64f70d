"""The funnel report of a filter run: ``report.json``, ``report.md`` and ``funnel.png``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from distill.log import pct


def write_report(out_dir: Path, rows_in: int, stages: list[dict], dropped: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = stages[-1]["kept"] if stages else rows_in
    report = {"rows_in": rows_in, "kept": kept, "dropped": rows_in - kept, "stages": stages,
              "drop_reasons": dict(Counter((r["dropped_by"], r["drop_reason"])
                                           for r in dropped).most_common())}
    report["drop_reasons"] = {f"{k[0]}: {k[1]}": v for k, v in report["drop_reasons"].items()}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    funnel_chart(out_dir / "funnel.png", rows_in, stages)
    (out_dir / "report.md").write_text(_markdown(report, dropped))


def _markdown(report: dict, dropped: list[dict]) -> str:
    n = report["rows_in"]
    lines = ["# Filter report", "",
             (f"{n} rows in, **{report['kept']} kept** ({pct(report['kept'], n)}), "
              f"{report['dropped']} dropped."), "", "![funnel](funnel.png)", "",
             "| stage | seen | kept | dropped | top reasons | seconds |",
             "|---|---:|---:|---:|---|---:|"]
    for s in report["stages"]:
        reasons = "; ".join(f"{r} ({c})" for r, c in list(s["reasons"].items())[:3]) or "-"
        lines.append(f"| {s['stage']} | {s['seen']} | {s['kept']} | {s['dropped']} | "
                     f"{reasons} | {s['seconds']} |")
    for s in report["stages"]:
        extra = {k: v for k, v in s.items()
                 if k not in ("stage", "options", "seen", "kept", "dropped", "reasons", "seconds")}
        if extra:
            lines += ["", f"## {s['stage']}", "", "```json",
                      json.dumps(extra, indent=2, default=str)[:4000], "```"]
    if dropped:
        lines += ["", "## Examples of dropped rows", ""]
        seen = set()
        for r in dropped:
            key = (r["dropped_by"], r["drop_reason"])
            if key in seen or len(seen) >= 8:
                continue
            seen.add(key)
            text = str(r.get("completion", ""))[:200].replace("\n", " ")
            lines.append(f"- **{r['dropped_by']}: {r['drop_reason']}** (`{r.get('id')}`): {text}")
    return "\n".join(lines) + "\n"


def funnel_chart(path: Path, rows_in: int, stages: list[dict]) -> None:
    """A horizontal bar per stage: the rows left after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["input"] + [s["stage"] for s in stages]
    counts = [rows_in] + [s["kept"] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.2))
    bars = ax.barh(labels[::-1], counts[::-1], color="#4c72b0")
    for bar, c in zip(bars, counts[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {c} ({pct(c, rows_in)})", va="center", fontsize=9)
    ax.set_xlabel("rows remaining after the stage")
    ax.set_xlim(0, max(counts + [1]) * 1.25)
    ax.set_title("Filter funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

