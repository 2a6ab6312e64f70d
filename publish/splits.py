"""Which split each row goes to: held-out problems (``source_id``) or a column naming the
split; samples of one problem never straddle splits."""

from __future__ import annotations

import hashlib
import json
import re

from distill.errors import DistillError

SPLIT_ORDER = ("train", "validation", "test")
SPLIT_NAME = re.compile(r"^\w+$")


def problem_of(row: dict) -> str:
    return str(row.get("source_id") or row.get("id"))


def assign_splits(rows: list[dict], *, test_size: float | None = None,
                  split_column: str | None = None, seed: int = 0) -> list[str]:
    """The split of each row. ``test_size``: a fraction (0 < F < 1) or a count (F >= 1) of
    problems (``source_id``) held out as ``test``, chosen by a seeded hash, so every sample of
    a problem lands in the same split. ``split_column``: a row column or source field whose
    value names the split. Neither: everything is ``train``."""
    if test_size is not None and split_column:
        raise DistillError("--test-size and --split-column exclude each other; pick one")
    if split_column:
        return _column_splits(rows, split_column)
    if not test_size:
        return ["train"] * len(rows)
    if test_size < 0 or (test_size >= 1 and test_size != int(test_size)):
        raise DistillError(f"--test-size takes a fraction in (0, 1) or a whole number of "
                           f"problems, not {test_size}")
    problems = sorted({problem_of(r) for r in rows},
                      key=lambda p: hashlib.sha256(f"{seed}\x00{p}".encode()).hexdigest())
    if len(problems) < 2:
        raise DistillError(f"--test-size: the rows hold {len(problems)} problem(s) (source_id); "
                           "a split by problem needs at least 2")
    k = round(test_size * len(problems)) if test_size < 1 else int(test_size)
    test = set(problems[:min(max(k, 1), len(problems) - 1)])
    return ["test" if problem_of(r) in test else "train" for r in rows]


def _column_splits(rows: list[dict], column: str) -> list[str]:
    splits, first = [], {}
    for r in rows:
        value = r.get(column)
        if column not in r:
            try:
                value = json.loads(r.get("source") or "{}").get(column)
            except (json.JSONDecodeError, AttributeError):
                value = None
        if value is None:
            raise DistillError(f"--split-column {column}: row {r.get('id')} has no {column!r} "
                               "column or source field")
        value = str(value)
        if not SPLIT_NAME.match(value):
            raise DistillError(f"--split-column {column}: {value!r} (row {r.get('id')}) is not "
                               "a split name (letters, digits, _)")
        prev = first.setdefault(problem_of(r), value)
        if prev != value:
            raise DistillError(f"--split-column {column}: problem {problem_of(r)} has rows in "
                               f"both {prev!r} and {value!r}; a problem must stay in one split")
        splits.append(value)
    return splits
