"""Run each program-of-thought row's program in the sandbox; what it prints last is the answer."""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

from distill.answers import normalize_number
from distill.filters.base import Stage
from distill.log import progress
from distill.sandbox import run_program

EXEC_FIELDS = ("stdout", "stderr", "returncode", "timed_out", "seconds")


class Execute(Stage):
    """Runs every row's ``code`` (``distill/sandbox.py``: own process, no network, time,
    memory, output and process limits) on ``workers`` threads, one subprocess each. Adds
    ``exec`` ({stdout, stderr, returncode, timed_out, seconds}) and, when the program
    succeeds, ``answer`` (the last non-empty stdout line, normalized as a number where it is
    one, else stripped) and ``answer_format`` = "program". Drops "timeout", "error" (nonzero
    exit, e.g. an exception, a memory or output limit) and "no output" rows, unless
    ``drop_failed`` is false. Rows whose ``code`` is None (not program-of-thought) pass
    through untouched."""

    name = "execute"
    scope = "row"  # each row alone; the rows it is given run on a thread pool
    needs = ("code",)
    adds = ("exec", "answer", "answer_format")

    def __init__(self, timeout: float = 5.0, memory_mb: int = 512, workers: int | None = None,
                 drop_failed: bool = True, progress: bool = True):
        super().__init__()
        if timeout <= 0 or memory_mb <= 0:
            raise TypeError("timeout and memory_mb must be positive")
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.drop_failed = drop_failed
        self.progress = progress
        self.failures: Counter = Counter()
        self.ran = 0
        self.seconds = 0.0

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        todo = [i for i, row in enumerate(rows) if row["code"] is not None]
        reasons: dict[int, str | None] = {}
        if todo:
            with ThreadPoolExecutor(min(self.workers, len(todo))) as pool, \
                    progress(len(todo), "execute", "prog", self.progress) as bar:
                futures = {pool.submit(self._run, rows[i]["code"]): i for i in todo}
                for future in as_completed(futures):
                    i = futures[future]
                    reasons[i] = self._apply(rows[i], future.result())
                    bar.update()
        return [(row, reasons.get(i) if self.drop_failed else None)
                for i, row in enumerate(rows)]

    def _run(self, code: str):
        # the CPU limit is the wall-clock one, rounded up: a busy loop dies either way
        return run_program(code, timeout=self.timeout, cpu_seconds=math.ceil(self.timeout),
                           memory_mb=self.memory_mb)

    def _apply(self, row: dict, result) -> str | None:
        row["exec"] = {k: getattr(result, k) for k in EXEC_FIELDS}
        self.ran += 1
        self.seconds += result.seconds
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if result.timed_out or result.killed_reason == "cpu limit":
            reason = "timeout"
        elif result.returncode != 0:
            reason = "error"
        elif not lines:
            reason = "no output"
        else:
            row["answer"] = _normalize(lines[-1])
            row["answer_format"] = "program"
            return None
        self.failures[reason] += 1
        return reason

    def report(self) -> dict:
        return {"programs": self.ran, "failures": dict(self.failures.most_common()),
                "mean_seconds": round(self.seconds / self.ran, 4) if self.ran else None}


def _normalize(line: str) -> str:
    """The printed answer, normalized when it is a number, else as printed."""
    return normalize_number(line) or line
