"""Score rows with a judge LLM through any generation backend; optionally drop low scores.

A judge prompt that declares a structured output (``judge-quality``: a JSON object with an
integer ``score``) is held to it while decoding, and the score is read from that object; a
prompt without one is read for its last "Score: N" or "N/10"."""

from __future__ import annotations

import json
import re

from distill.datagen.backends import Request, Sampling, backend_options_for, get_backend
from distill.datagen.prompts import load_prompt
from distill.datagen.structured import parse as parse_output
from distill.filters.base import Stage
from distill.models import resolve_model

SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*/\s*10", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The last "Score: N" or "N/10" in a judge's reply."""
    matches = SCORE.findall(text)
    if not matches:
        return None
    a, b = matches[-1]
    return float(a or b)


class Score(Stage):
    """Adds ``score`` (and the judge's reply, ``score_reply``); with ``threshold``, drops rows
    scored below it or left unscored. The judge's backend takes what ``distill generate``'s
    does: ``batch_size``, ``backend_options`` (``api_key_env``, ``timeout``, ``max_retries``,
    ``concurrency``, ...) and vLLM's ``engine_args``."""

    name = "score"
    scope = "row"  # each row alone; the rows it is given go to the judge in batches
    needs = ("question", "completion")
    adds = ("score", "score_reply")

    def __init__(self, model: str | None = None, backend: str = "auto",
                 base_url: str | None = None, prompt: str = "judge-quality",
                 threshold: float | None = None, max_tokens: int | None = None,
                 batch_size: int | None = None, backend_options: dict | None = None,
                 engine_args: dict | None = None):
        super().__init__()
        self.model, self.backend = model, backend
        # checked now, before any row is read: as `distill generate` checks its flags
        self.options = backend_options_for(backend, base_url, batch_size, backend_options,
                                           engine_args, keys=True)
        self.prompt = load_prompt(prompt)
        self.sampling = Sampling(**{**self.prompt.sampling,
                                    **({"max_tokens": max_tokens} if max_tokens else {}), "n": 1},
                                 output=self.prompt.output)
        self.threshold = threshold
        self.engine = None

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        if not rows:
            return []
        if self.engine is None:  # opened once for every batch of the run; ``close`` ends it
            self.engine = get_backend(self.backend, resolve_model(self.model), **self.options)
        replies = []
        for i in range(0, len(rows), self.engine.batch_size):
            batch = rows[i:i + self.engine.batch_size]
            requests = [Request(self.prompt.render(r, f"row {r.get('id')}"), 1,
                                self.sampling.seed) for r in batch]
            replies += [c[0].text for c in self.engine.generate(requests, self.sampling)]
        return [(row, self._verdict(row, reply)) for row, reply in zip(rows, replies)]

    def _score(self, reply: str) -> float | None:
        """The structured output's ``score`` where the prompt declares one (None where the
        reply does not match it), else the last "Score: N" in the reply."""
        if not self.prompt.output:
            return parse_score(reply)
        value, valid = parse_output(self.prompt.output, reply)
        score = json.loads(value).get("score") if valid else None
        return float(score) if isinstance(score, (int, float)) else None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _verdict(self, row: dict, reply: str) -> str | None:
        row["score"], row["score_reply"] = self._score(reply), reply
        if self.threshold is None:
            return None
        if row["score"] is None:
            return "judge gave no score"
        return f"score below {self.threshold:g}" if row["score"] < self.threshold else None
