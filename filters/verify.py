"""Compare each row's answer with its gold answer (the shared checker of distill.answers)."""

from __future__ import annotations

from distill.answers import AMBIGUOUS, CORRECT, extract_gold, judge
from distill.errors import DistillError
from distill.filters.base import RowStage

MISSING_GOLD = ("keep", "drop")


class Verify(RowStage):
    """Adds ``correct`` (None when the row has no gold answer). Drops wrong answers, ambiguous
    ones ("12 or 13", "about 12": never correct) and rows without one (``drop_incorrect``),
    and rows without a gold answer when ``missing_gold`` is "drop"."""

    name = "verify"
    needs = ("answer", "gold")
    adds = ("correct",)

    def __init__(self, drop_incorrect: bool = True, missing_gold: str = "keep"):
        super().__init__()
        if missing_gold not in MISSING_GOLD:
            raise DistillError(f"verify: missing_gold is one of {', '.join(MISSING_GOLD)}, "
                               f"not {missing_gold!r}")
        self.drop_incorrect = drop_incorrect
        self.missing_gold = missing_gold

    def check(self, row: dict) -> str | None:
        gold = extract_gold(row["gold"])
        if gold is None:
            row["correct"] = None
            return "no gold answer" if self.missing_gold == "drop" else None
        verdict = None if row["answer"] is None else judge(row["answer"], gold)
        row["correct"] = verdict == CORRECT
        if row["correct"] or not self.drop_incorrect:
            return None
        return {None: "no answer", AMBIGUOUS: "ambiguous answer"}.get(verdict, "wrong answer")
