"""A filter stage answers keep or drop, with a reason, for each row, and counts what it saw.

A stage declares how it runs, so that executors run it without knowing it by name:

* ``scope``: "row" (each row is decided alone), "group" (rows are decided together with the
  rows of equal ``group_key(row)``) or "dataset" (the stage needs every row at once);
* ``needs``: the columns a row must have; ``adds``: the columns the stage adds to rows
  (``adds_when_dropped``: to the rows it drops only); an empty output still has them all;
* ``distributed``: for a "dataset" stage, ``"module:function"`` of a distributed plan of it
  (see ``distill.filters.ray.filter``), or None: an executor then runs it in one place.

Row-wise stages subclass ``RowStage`` and implement ``check(row)``: it may add columns to the
row and returns ``None`` to keep it or a short reason to drop it. Group stages subclass
``GroupStage`` and implement ``group_key(row)`` and ``check_group(rows)``. Any stage may
instead implement ``select(rows)`` over all the rows it is given (a "row" stage that batches
its rows, like execute). A "dataset" stage that implements ``drops(batches)`` is run without
holding the rows: ``batches()`` gives a fresh pass over its input, in batches of rows, as often
as it needs, and ``drops`` returns the rows to drop by position, each with its reason and the
columns it adds (dedupe holds only hashes and signatures). A stage that holds something open
(a judge model) releases it in ``close()``, which the executor calls once it is done.

``apply(rows)`` runs a stage: (kept rows, dropped rows), counted in ``stats``; ``decide(rows)``
is the same decisions uncounted, for an executor that counts them itself (``tally``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

from distill.errors import DistillError
from distill.log import log

SCOPES = ("row", "group", "dataset")


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
    """Base class. ``name`` is the stage's name in configs and in ``dropped_by``; options come
    from the constructor's keywords; the declarations are in the module docstring."""

    name = "stage"
    scope = "dataset"
    needs: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    adds_when_dropped: tuple[str, ...] = ()
    distributed: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.scope not in SCOPES:
            raise TypeError(f"{cls.__name__}.scope is one of {', '.join(SCOPES)}, "
                            f"not {cls.scope!r}")

    def __init__(self):
        self.stats = Stats()

    def group_key(self, row: dict) -> Hashable:
        """The key of the group a row is decided with (scope "group")."""
        raise NotImplementedError

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        """Each row with ``None`` (keep) or the reason to drop it."""
        raise NotImplementedError

    def report(self) -> dict:
        """Extra entries for the funnel report (e.g. the contamination hits)."""
        return {}

    def close(self) -> None:
        """Release what the stage holds open; it may run again after."""

    def apply(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Run the stage: (kept rows, dropped rows with ``dropped_by`` and ``drop_reason``)."""
        return self.tally(self.decide(rows))

    def tally(self, decisions) -> tuple[list[dict], list[dict]]:
        """Count ``decide``'s decisions in ``stats``: (kept rows, dropped rows)."""
        kept, dropped = [], []
        for row, reason in decisions:
            self.stats.seen += 1
            if reason is None:
                self.stats.kept += 1
                kept.append(row)
            else:
                self.stats.dropped += 1
                self.stats.reasons[reason] += 1
                dropped.append(row)
        return kept, dropped

    def decide(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        """Each row as the stage leaves it and ``None`` (kept), or with ``dropped_by`` and
        ``drop_reason`` and the reason (dropped); counts nothing."""
        for row in rows:
            self.require(row)
        return [(row, None) if reason is None else (self.dropped_row(row, reason), reason)
                for row, reason in self.select(rows)]

    def dropped_row(self, row: dict, reason: str) -> dict:
        return {**row, "dropped_by": self.name, "drop_reason": reason}

    def require(self, row: dict) -> None:
        """Stop the run, naming the stage and the column, when ``row`` lacks a needed column."""
        for column in self.needs:
            if column not in row:
                raise DistillError(f"stage {self.name!r} needs the column {column!r}, which row "
                                   f"{row.get('id', '?')} lacks; it has: {', '.join(row)}")


class RowStage(Stage):
    """A stage that decides row by row."""

    scope = "row"

    def check(self, row: dict) -> str | None:
        raise NotImplementedError

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        return [(row, self.check(row)) for row in rows]


class GroupStage(Stage):
    """A stage that decides the rows of each group (equal ``group_key``) together."""

    scope = "group"

    def check_group(self, rows: list[dict]) -> list[str | None]:
        """For each row of one group, ``None`` (keep) or the reason to drop it."""
        raise NotImplementedError

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        groups: dict = defaultdict(list)
        for row in rows:
            groups[self.group_key(row)].append(row)
        decisions = {}
        for group in groups.values():
            for row, reason in zip(group, self.check_group(group)):
                decisions[id(row)] = reason
        return [(row, decisions[id(row)]) for row in rows]


@dataclass
class Filtered:
    """What running the stages gave: rows in, kept and dropped rows (in the local order), and
    per stage its seconds and its report's extra entries."""

    rows_in: int
    kept: list[dict]
    dropped: list[dict]
    seconds: list[float]
    reports: list[dict]


def log_stage(stage: Stage, left: int, seconds: float) -> None:
    log(f"filter {stage.name}: {stage.stats.seen} seen, {stage.stats.dropped} dropped, "
        f"{left} left ({seconds:.1f}s)")
