"""Find the final answer (or, for program-of-thought rows, the program) in each completion."""

from __future__ import annotations

from distill.answers import extract_code
from distill.filters.base import RowStage
from distill.tools import final_answer


class Parse(RowStage):
    """Adds ``answer`` (normalized), ``answer_raw``, ``answer_span`` ([start, end] of the raw
    answer in the completion), ``answer_format``, ``reasoning`` (the text before the answer
    statement) and ``code`` (the program of a "pot" row, whose answer the execute stage
    finds). In a tool-integrated trace the answer is looked for after the last ```output
    block: what a program printed is not the model's answer. Drops rows without an answer (``drop_missing``), which includes rows whose only
    number is the last one in the text: ``allow_last_number`` (off by default) takes that
    number as the answer, a guess marked ``answer_format`` "fallback"."""

    name = "parse"
    needs = ("completion", "kind")
    adds = ("answer", "answer_raw", "answer_span", "answer_format", "reasoning", "code")

    def __init__(self, drop_missing: bool = True, allow_last_number: bool = False):
        super().__init__()
        self.drop_missing = drop_missing
        self.allow_last_number = allow_last_number

    def check(self, row: dict) -> str | None:
        text = row["completion"] or ""
        row.update(answer=None, answer_raw=None, answer_span=None, answer_format=None,
                   reasoning=text.strip(), code=None)
        if row["kind"] == "pot":
            return self._program(row, text)
        found = final_answer(text, fallback=True)
        if found is None:
            return "no answer" if self.drop_missing else None
        if found.format == "fallback" and not self.allow_last_number:
            return "only a last-number fallback" if self.drop_missing else None
        row.update(answer=found.answer, answer_raw=found.raw, answer_span=list(found.span),
                   answer_format=found.format, reasoning=text[:found.start].strip())
        return None

    @staticmethod
    def _program(row: dict, text: str) -> str | None:
        program = extract_code(text)
        if program is None:
            return "no code block"
        code, (start, _) = program
        row.update(code=code, reasoning=text[:start].rsplit("```", 1)[0].strip())
        return None
