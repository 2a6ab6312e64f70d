"""The input of ``distill publish`` and ``distill show``: a dataset folder, the chain of
manifests that made it (its lineage) and the filter funnel they record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill import io
from distill.errors import DistillError


@dataclass
class Input:
    """The rows' dataset folder, its manifest chain (newest first) and the folder holding the
    filter report (``report.json``, ``funnel.png``) when there is one."""

    folder: Path
    chain: list[dict]
    report_dir: Path | None

    @property
    def generate(self) -> dict:
        return next((m for m in self.chain if m.get("kind") == "generate"), {})

    @property
    def filters(self) -> list[dict]:
        """Filter manifests, oldest first."""
        return [m for m in reversed(self.chain) if m.get("kind") == "filter"]


def resolve(in_dir: str | Path) -> Input:
    """A filter output folder (its ``kept/``), or a dataset folder of ``data/part-*.parquet``."""
    path = Path(in_dir)
    if io.shard_paths(path / "kept"):
        folder, report_dir = path / "kept", path
    elif io.shard_paths(path):
        folder = path
        report_dir = path.parent if (path.parent / "report.json").exists() else None
    else:
        raise DistillError(f"{path}: neither a filter output (kept/data/part-*.parquet) nor a "
                           "dataset folder (data/part-*.parquet)")
    return Input(folder, io.lineage(io.read_manifest(folder)), report_dir)


def funnel(chain: list[dict]) -> dict | None:
    """``{rows_in, kept, stages}`` of the newest filter run in the chain, if any."""
    for m in chain:
        if m.get("kind") == "filter" and m.get("stages"):
            stages = m["stages"]
            return {"rows_in": stages[0]["seen"], "kept": stages[-1]["kept"], "stages": stages}
    return None
