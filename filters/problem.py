"""Read the new problem a problem-writing prompt (``kind: problem``: ``gsm8k-evol``,
``self-instruct``) wrote, and make the row that problem, so that ``generate`` reads the kept
rows as its problems.

The problem is the paragraph after the last ``header`` line ("New problem:"), up to a blank
line or a line that starts a solution ("Answer:", "Solution:", "Step 1:"). A kept row becomes
the new problem: ``question`` is the new problem, ``gold`` is null (nobody knows its answer
yet: the ``consensus`` stage labels it later), ``parent_id`` and ``parent_question`` are the
seed's ``source_id`` and question, ``evolved_by`` the prompt that wrote it. Its ``id`` stays
the generated row's, so generating from it again is stable and resumable.
"""

from __future__ import annotations

import re

from distill.errors import DistillError
from distill.filters.base import RowStage

_SOLUTION = re.compile(r"^\s*(?:\*\*)?(?:answer|solution|step\s*\d+|explanation)\b"
                       r"[^\n:]{0,20}:", re.IGNORECASE)


def read_problem(text: str, header: str) -> tuple[str | None, bool]:
    """The problem in ``text`` after the last ``header`` (the whole text when ``header`` is
    empty), and whether something (a blank line, a solution line) ended it; ``(None, False)``
    when the header is missing."""
    if header:
        at = text.lower().rfind(header.lower())
        if at < 0:
            return None, False
        text = text[at + len(header):]
    lines, ended = [], False
    for line in text.strip().splitlines():
        if not line.strip() or _SOLUTION.match(line):
            ended = True
            break
        lines.append(line.strip())
    return " ".join(lines).strip(' "*'), ended


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", (text or "").lower()))


class NewProblem(RowStage):
    """Drops rows whose completion has no ``header`` ("no 'New problem:' line"), whose problem
    is empty or shorter than ``min_chars`` ("too short"), longer than ``max_chars`` ("too
    long"), asks nothing (no "?", when ``question_mark``: "no question"), cut off by the token limit before it ended ("truncated", unless
    ``drop_truncated`` is false) or has the same words as its seed ("same as its seed").
    Repeats of one problem are the ``dedupe`` stage's (the ``problem`` preset runs it on
    ``question``)."""

    name = "new_problem"
    needs = ("completion", "question", "source_id", "template")
    adds = ("parent_id", "parent_question", "evolved_by")

    def __init__(self, header: str = "New problem:", min_chars: int = 20,
                 max_chars: int = 1000, question_mark: bool = True,
                 drop_truncated: bool = True):
        super().__init__()
        if not isinstance(header, str):
            raise DistillError(f"new_problem: header must be a string, not {header!r}")
        for label, v in (("min_chars", min_chars), ("max_chars", max_chars)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise DistillError(f"new_problem: {label} must be an integer >= 0, not {v!r}")
        self.header, self.min_chars, self.max_chars = header, min_chars, max_chars
        self.question_mark, self.drop_truncated = question_mark, drop_truncated

    def check(self, row: dict) -> str | None:
        problem, ended = read_problem(row["completion"] or "", self.header)
        row.update(parent_id=row["source_id"], parent_question=row["question"],
                   evolved_by=row["template"])
        if problem is None:
            return f"no {self.header!r} line"
        if len(problem) < max(self.min_chars, 1):
            return "too short"
        if len(problem) > self.max_chars:
            return "too long"
        if self.drop_truncated and not ended and row.get("finish_reason") == "length":
            return "truncated"
        if self.question_mark and "?" not in problem:
            return "no question"
        if _words(problem) == _words(row["question"]):
            return "same as its seed"
        row.update(question=problem, gold=None)
        return None
