"""The comparison's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _yerr(rows: list[dict]) -> list[list[float]]:
    lo = [r["accuracy"] - (r["accuracy_ci"] or [r["accuracy"]] * 2)[0] for r in rows]
    hi = [(r["accuracy_ci"] or [r["accuracy"]] * 2)[1] - r["accuracy"] for r in rows]
    return [lo, hi]


def _scatter(ax, rows: list[dict], xkey: str) -> None:
    for r in rows:
        ax.errorbar([r[xkey]], [r["accuracy"]], yerr=_yerr([r]), fmt="o", capsize=4,
                    label=r["run"])
        ax.annotate(r["run"], (r[xkey], r["accuracy"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.set_ylim(bottom=0)


def write_plots(rows: list[dict], pareto: list[str], out: Path) -> list[str]:
    """accuracy.png always; accuracy_vs_params.png and pareto.png when parameter counts are
    known; accuracy_vs_tokens.png. Returns the paths written."""
    plt = _pyplot()
    written = []

    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(rows) + 2), 3.8))
    labels = [r["run"] for r in rows]
    ax.bar(labels, [r["accuracy"] for r in rows], yerr=_yerr(rows), capsize=5,
           color=["#4c72b0" if r["teacher"] else "#dd8452" for r in rows])
    ax.set_ylabel("accuracy (greedy), 95% CI")
    ax.set_ylim(0, min(1.0, max(r["accuracy_ci"][1] for r in rows) * 1.25 + 0.02))
    ax.set_title("accuracy")
    ax.tick_params(axis="x", labelrotation=15)
    written.append(_save(fig, out / "accuracy.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    _scatter(ax, rows, "mean_tokens")
    ax.set_xlim(left=0, right=max(r["mean_tokens"] for r in rows) * 1.25 + 1)
    ax.set_xlabel("mean generated tokens per answer")
    ax.set_ylabel("accuracy (greedy), 95% CI")
    ax.set_title("accuracy vs tokens per answer")
    written.append(_save(fig, out / "accuracy_vs_tokens.png"))

    sized = [r for r in rows if r["params"]]
    if sized:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        _scatter(ax, sized, "params")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("accuracy (greedy), 95% CI")
        ax.set_title("accuracy vs parameters")
        written.append(_save(fig, out / "accuracy_vs_params.png"))

        fig, ax = plt.subplots(figsize=(5.5, 4))
        front = sorted((r for r in sized if r["run"] in pareto), key=lambda r: r["params"])
        others = [r for r in sized if r["run"] not in pareto]
        ax.scatter([r["params"] for r in others], [r["accuracy"] for r in others],
                   color="#999999", label="dominated")
        ax.step([r["params"] for r in front], [r["accuracy"] for r in front], where="post",
                color="#c44e52", marker="o", label="Pareto front")
        for r in sized:
            ax.annotate(r["run"], (r["params"], r["accuracy"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("parameters")
        ax.set_ylabel("accuracy (greedy)")
        ax.set_title("quality / size Pareto front")
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "pareto.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
