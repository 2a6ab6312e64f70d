"""A filter stage answers keep or drop, with a reason, for each row, and counts what it saw.

Row-wise stages subclass ``RowStage`` and implement ``check(row)``: it may add columns to the
row and returns ``None`` to keep it or a short reason to drop it. Stages that need all rows
at once (vote, dedupe) subclass ``Stage`` and implement ``select(rows)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from distill.errors import DistillError


@dataclass
class Stats:
    seen: int = 0
    kept: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"seen": self.seen, "kept": self.kept, "dropped": self.dropped,
                "reasons": dict(self.reasons.most_common())}


class Stage:
    """Base class. ``name`` is the stage's name in configs and in ``dropped_by``; ``needs``
    lists the columns a row must have; options come from the constructor's keywords."""

    name = "stage"
    needs: tuple[str, ...] = ()

    def __init__(self):
        self.stats = Stats()

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        """Each row with ``None`` (keep) or the reason to drop it."""
        raise NotImplementedError

    def report(self) -> dict:
        """Extra entries for the funnel report (e.g. the contamination hits)."""
        return {}

    def __call__(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Run the stage: (kept rows, dropped rows with ``dropped_by`` and ``drop_reason``)."""
        for row in rows:
            self._require(row)
        kept, dropped = [], []
        for row, reason in self.select(rows):
            self.stats.seen += 1
            if reason is None:
                self.stats.kept += 1
                kept.append(row)
            else:
                self.stats.dropped += 1
                self.stats.reasons[reason] += 1
                dropped.append({**row, "dropped_by": self.name, "drop_reason": reason})
        return kept, dropped

    def _require(self, row: dict) -> None:
        for column in self.needs:
            if column not in row:
                raise DistillError(f"stage {self.name!r} needs the column {column!r}, which row "
                                   f"{row.get('id', '?')} lacks; it has: {', '.join(row)}")


class RowStage(Stage):
    """A stage that decides row by row."""

    def check(self, row: dict) -> str | None:
        raise NotImplementedError

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        return [(row, self.check(row)) for row in rows]
