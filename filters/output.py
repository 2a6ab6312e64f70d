"""Drop rows whose completion does not match the structured output their prompt declared."""

from __future__ import annotations

from distill.filters.base import RowStage


class ValidOutput(RowStage):
    """Keeps rows with ``output_valid`` true: generated with a prompt file's ``output``
    constraint (JSON schema, regex or choice), and matching it (a completion cut at
    ``max_tokens`` does not)."""

    name = "valid_output"
    needs = ("output_valid",)

    def check(self, row: dict) -> str | None:
        return None if row["output_valid"] else "output does not match the prompt's schema"
