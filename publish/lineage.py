"""The input of ``distill publish``: the data read, the chain of
manifests that made it (its lineage) and the filter funnel they record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill import io
from distill.data import Data, conversations, read


@dataclass
class Input:
    """The data read (``distill.data.Data``), its manifest chain (newest first) and the folder
    holding the filter report (``report.json``, ``funnel.png``) when there is one."""

    data: Data
    chain: list[dict]
    report_dir: Path | None

    @property
    def generate(self) -> dict:
        return next((m for m in self.chain if m.get("kind") == "generate"), {})

    @property
    def filters(self) -> list[dict]:
        """Filter manifests, oldest first."""
        return [m for m in reversed(self.chain) if m.get("kind") == "filter"]


def resolve(in_dir: str | Path, options: dict | None = None) -> Input:
    """Any data ``distill.data.read`` takes (``options``: its split, subset, revision and
    fields), mapped to distill's row; a filter output publishes its ``kept/``."""
    data = conversations(read(in_dir, **(options or {})))
    report_dir = None
    if data.kind == "filter output":
        report_dir = Path(in_dir)
    elif data.folder and (data.folder.parent / "report.json").exists():
        report_dir = data.folder.parent
    return Input(data, io.lineage(data.manifest), report_dir)


def funnel(chain: list[dict]) -> dict | None:
    """``{rows_in, kept, stages}`` of the newest filter run in the chain, if any."""
    for m in chain:
        if m.get("kind") == "filter" and m.get("stages"):
            stages = m["stages"]
            return {"rows_in": stages[0]["seen"], "kept": stages[-1]["kept"], "stages": stages}
    return None
