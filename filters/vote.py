"""Stages that judge a row by its siblings: the other samples of the same problem.

* ``vote``: self-consistency without gold. Samples of a problem vote with their parsed
  ``answer``; the rows agreeing with a clear majority are kept.
* ``pass_rate``: keep problems neither always nor never solved (STaR / rejection sampling
  curricula), from the ``correct`` column.
* ``agreement``: a problem answered both by chain-of-thought (``kind`` cot) and by a program
  (``kind`` pot) keeps the rows whose answer the other kind also reached.

A problem is the rows sharing ``source_id`` (and ``task``, when rows carry one: an
instruction grid expands one source row into several tasks). ``agreement`` groups by
``question`` instead, since CoT and PoT rows may come from different source files.
"""

from __future__ import annotations

import re
from collections import Counter

from distill.answers import AMBIGUOUS, read_answer
from distill.errors import DistillError
from distill.filters.base import GroupStage


def problem_key(row: dict) -> tuple:
    return (row.get("source_id"), row.get("task"))


class Vote(GroupStage):
    """Majority vote over the clear answers (non-null, not ambiguous) of each problem.

    A problem has a clear majority when its most frequent answer is not tied with another,
    has at least ``min_votes`` votes (default 2) and a share of at least ``min_share``
    (default 0.5) of the clear answers. Rows with that answer are kept; the others are
    dropped as "disagrees with majority", rows without an answer as "no answer", rows whose
    answer is ambiguous ("12 or 13") as "ambiguous answer", and every
    row of a problem without a clear majority as "no clear majority". Answers are compared as
    strings: the parse stage has normalized them.

    Adds ``votes`` (how many samples gave the row's answer), ``majority`` (the clear majority
    answer, else null) and ``vote_share`` (``votes`` / answered samples of the problem).
    """

    name = "vote"
    needs = ("source_id", "answer")
    adds = ("votes", "majority", "vote_share")
    group_key = staticmethod(problem_key)

    def __init__(self, min_votes: int = 2, min_share: float = 0.5):
        super().__init__()
        if not isinstance(min_votes, int) or min_votes < 1:
            raise DistillError(f"vote: min_votes must be an integer >= 1, not {min_votes!r}")
        if not isinstance(min_share, (int, float)) or not 0 <= min_share <= 1:
            raise DistillError(f"vote: min_share must be in [0, 1], not {min_share!r}")
        self.min_votes, self.min_share = min_votes, min_share
        self.problems = Counter()

    def check_group(self, group: list[dict]) -> list[str | None]:
        counts = Counter(r["answer"] for r in group if clear(r["answer"]))
        answered = sum(counts.values())
        ranked = counts.most_common(2)
        majority = None
        if ranked:
            top, n = ranked[0]
            tied = len(ranked) > 1 and ranked[1][1] == n
            if not tied and n >= self.min_votes and n / answered >= self.min_share:
                majority = top
        self.problems["with majority" if majority is not None else "no clear majority"] += 1
        reasons = []
        for r in group:
            votes = counts[r["answer"]] if clear(r["answer"]) else 0
            r["votes"] = votes
            r["majority"] = majority
            r["vote_share"] = round(votes / answered, 4) if answered else 0.0
            if r["answer"] is None:
                reasons.append("no answer")
            elif not clear(r["answer"]):
                reasons.append("ambiguous answer")
            elif majority is None:
                reasons.append("no clear majority")
            elif r["answer"] != majority:
                reasons.append("disagrees with majority")
            else:
                reasons.append(None)
        return reasons

    def report(self) -> dict:
        return {"problems": dict(self.problems)}


class PassRate(GroupStage):
    """Keep the problems whose share of correct samples lies in ``[lo, hi]`` (both bounds
    inclusive; defaults 0.1 and 0.9), with all their rows, correct or not.

    The share counts the rows whose ``correct`` is true or false; rows without gold (null)
    are not counted, and a problem with no gold at all is kept with ``pass_rate`` null.
    Run it before any stage that drops incorrect rows (``verify: {drop_incorrect: false}``
    first), else every rate is 1.0. With one sample per problem every rate is 0 or 1: it
    takes several samples (``n``) per problem to mean anything.
    Reasons: "too easy (pass rate > 0.9)", "too hard (pass rate < 0.1)"; the row's rate is
    in its ``pass_rate`` column.
    Adds ``pass_rate``.
    """

    name = "pass_rate"
    needs = ("source_id", "correct")
    adds = ("pass_rate",)
    group_key = staticmethod(problem_key)

    def __init__(self, lo: float = 0.1, hi: float = 0.9):
        super().__init__()
        for label, v in (("lo", lo), ("hi", hi)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise DistillError(f"pass_rate: {label} must be a number in [0, 1], not {v!r}")
        if lo > hi:
            raise DistillError(f"pass_rate: lo ({lo}) is above hi ({hi})")
        self.lo, self.hi = lo, hi
        self.problems = Counter()
        self.rates = Counter()

    def check_group(self, group: list[dict]) -> list[str | None]:
        judged = [r["correct"] for r in group if r["correct"] is not None]
        rate = sum(bool(c) for c in judged) / len(judged) if judged else None
        if rate is None:
            reason, label = None, "no gold"
        elif rate > self.hi + 1e-12:
            reason, label = f"too easy (pass rate > {self.hi:g})", "too easy"
        elif rate < self.lo - 1e-12:
            reason, label = f"too hard (pass rate < {self.lo:g})", "too hard"
        else:
            reason, label = None, "kept"
        self.problems[label] += 1
        if rate is not None:
            self.rates[f"{rate:.1f}"] += 1
        for r in group:
            r["pass_rate"] = None if rate is None else round(rate, 4)
        return [reason] * len(group)

    def report(self) -> dict:
        out = {"problems": dict(self.problems),
               "pass_rate_histogram": dict(sorted(self.rates.items()))}
        if self.rates and set(self.rates) == {"1.0"} and sum(self.rates.values()) > 1:
            out["note"] = ("every problem has pass rate 1.0: did a stage before this one "
                           "drop the incorrect rows?")
        return out


def clear(answer: str | None) -> bool:
    """An answer that states one value: not null, and not one the checker reads as ambiguous
    ("12 or 13", "about 12"), which no number of identical votes makes right."""
    return answer is not None and read_answer(answer) != AMBIGUOUS


def question_key(row: dict) -> str:
    return re.sub(r"\s+", " ", str(row.get("question") or "")).strip()


def _answers_match():
    """``distill.answers.is_correct`` (numeric / symbolic equivalence) when present, else
    string equality; memoized per stage."""
    try:
        from distill.answers import is_correct
    except ModuleNotFoundError as e:
        if e.name not in ("distill.answers",):
            raise
        is_correct = None
    cache: dict = {}

    def match(a: str, b: str) -> bool:
        if a == b:
            return True
        if is_correct is None:
            return False
        if (a, b) not in cache:
            cache[(a, b)] = bool(is_correct(a, b))
        return cache[(a, b)]

    return match


class Agreement(GroupStage):
    """CoT/PoT cross-check. For a problem (rows sharing ``question``) answered by both kinds,
    a row is kept when its ``answer`` matches the answer of at least one row of the other
    kind; otherwise it is dropped as "CoT and PoT disagree" ("no answer" when it has none,
    "ambiguous answer" when it is ambiguous).
    Rows of problems with one kind only, and rows of other kinds, pass through. Adds
    ``agreement``: how many rows of the other kind match (null when there is none)."""

    name = "agreement"
    needs = ("question", "kind", "answer")
    adds = ("agreement",)
    group_key = staticmethod(question_key)
    KINDS = ("cot", "pot")

    def __init__(self):
        super().__init__()
        self.problems = Counter()
        self.match = _answers_match()

    def check_group(self, group: list[dict]) -> list[str | None]:
        by_kind = {k: [r for r in group if r["kind"] == k] for k in self.KINDS}
        both = all(by_kind.values())
        self.problems["both kinds" if both else "one kind"] += 1
        reasons = []
        for r in group:
            reason = None
            r["agreement"] = None
            if both and r["kind"] in self.KINDS:
                other = by_kind["pot" if r["kind"] == "cot" else "cot"]
                if r["answer"] is None:
                    r["agreement"], reason = 0, "no answer"
                elif not clear(r["answer"]):
                    r["agreement"], reason = 0, "ambiguous answer"
                else:
                    r["agreement"] = sum(1 for o in other if clear(o["answer"])
                                         and self.match(r["answer"], o["answer"]))
                    reason = None if r["agreement"] else "CoT and PoT disagree"
            reasons.append(reason)
        return reasons

    def report(self) -> dict:
        return {"problems": dict(self.problems)}
