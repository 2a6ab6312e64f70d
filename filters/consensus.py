"""Label problems that have no gold answer (new problems from ``gsm8k-evol``,
``self-instruct``) by the consensus of their samples, and drop the problems without one.

A problem is the rows sharing ``source_id`` (and ``task``), of any kind: chain-of-thought rows
vote with their parsed ``answer``, program-of-thought rows with the answer their executed
program printed. The consensus is the most frequent clear answer (an ambiguous "12 or 13"
casts no vote, as in ``vote``), when it is not tied, has at least ``min_votes`` votes and a
share of at least ``min_share`` of the clear answers, and, with ``kinds`` (e.g. ``[cot,
pot]``), was reached by at least one row of each of those kinds. Every row of a labelled
problem is kept with the consensus as its ``gold``, so ``verify`` after it keeps the rows that
reach it; every row of a problem without one is dropped.
"""

from __future__ import annotations

from collections import Counter

from distill.errors import DistillError
from distill.filters.base import GroupStage
from distill.filters.vote import clear, problem_key


class Consensus(GroupStage):
    """Adds ``gold`` (the consensus), ``gold_from`` ("consensus"; "source" for a problem whose
    rows already carry a gold answer: it is left as it is), ``consensus_votes`` and
    ``consensus_share`` (votes / clear answers of the problem). Drops every row of a problem
    with "no answers", "tied answers", "too few votes (< min_votes)", "consensus share below
    min_share" or "not reached by KIND"."""

    name = "consensus"
    needs = ("source_id", "answer", "gold", "kind")
    adds = ("gold_from", "consensus_votes", "consensus_share")
    group_key = staticmethod(problem_key)

    def __init__(self, min_votes: int = 2, min_share: float = 0.5,
                 kinds: list[str] | None = None):
        super().__init__()
        if not isinstance(min_votes, int) or isinstance(min_votes, bool) or min_votes < 1:
            raise DistillError(f"consensus: min_votes must be an integer >= 1, not {min_votes!r}")
        if not isinstance(min_share, (int, float)) or isinstance(min_share, bool) \
                or not 0 <= min_share <= 1:
            raise DistillError(f"consensus: min_share must be in [0, 1], not {min_share!r}")
        if kinds is not None and (not isinstance(kinds, list) or not kinds
                                  or not all(isinstance(k, str) for k in kinds)):
            raise DistillError(f"consensus: kinds is a list of row kinds (e.g. [cot, pot]), "
                               f"not {kinds!r}")
        self.min_votes, self.min_share, self.kinds = min_votes, min_share, kinds or []
        self.problems = Counter()

    def check_group(self, group: list[dict]) -> list[str | None]:
        if any(r["gold"] is not None for r in group):
            self.problems["gold given"] += 1
            for r in group:
                r.update(gold_from="source", consensus_votes=None, consensus_share=None)
            return [None] * len(group)
        counts = Counter(r["answer"] for r in group if clear(r["answer"]))
        answered = sum(counts.values())
        ranked = counts.most_common(2)
        top, votes = ranked[0] if ranked else (None, 0)
        reached = {r["kind"] for r in group if r["answer"] == top}
        missing = [k for k in self.kinds if k not in reached]
        if not ranked:
            reason = "no answers"
        elif len(ranked) > 1 and ranked[1][1] == votes:
            reason = "tied answers"
        elif votes < self.min_votes:
            reason = f"too few votes (< {self.min_votes})"
        elif votes / answered < self.min_share:
            reason = f"consensus share below {self.min_share:g}"
        elif missing:
            reason = f"not reached by {missing[0]}"
        else:
            reason = None
        self.problems["labelled" if reason is None else "no consensus"] += 1
        for r in group:
            r.update(gold_from=None, consensus_votes=votes or None,
                     consensus_share=round(votes / answered, 4) if answered else None)
            if reason is None:
                r.update(gold=top, gold_from="consensus")
        return [reason] * len(group)

    def report(self) -> dict:
        return {"problems": dict(self.problems)}
