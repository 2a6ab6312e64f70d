"""A real generated + filtered dataset for the publish and show tests: ``distill generate``
with a scripted teacher (a Backend that answers from a table), then ``run_filter``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from distill.datagen.backends import Backend, Completion
from distill.datagen.generate import generate
from distill.filters.pipeline import run_filter

PROBLEMS = 8
SAMPLES = 3
STAGES = [{"parse": {}}, {"verify": {}}, {"quality": {"drop_truncated": True, "min_chars": 20}},
          {"dedupe": {"method": "exact"}}]


def problem(i: int) -> dict:
    return {"id": f"p{i}", "question": f"Sam has {i} marbles and finds {i + 3} more. How many?",
            "answer": str(2 * i + 3), "split": "test" if i in (2, 5) else "train"}


def completion(i: int, k: int) -> str:
    gold = 2 * i + 3
    if k == 0:
        extra = " Note: `a`, ``b`` and ```c``` stay </script><b>raw</b>." if i == 5 else ""
        return f"Sam starts with {i} marbles and finds {i + 3}, so {i} + {i + 3} = {gold}." \
            f"{extra}\n#### {gold}"
    if k == 1:
        if i % 2:  # the same text again: dedupe drops it
            return completion(i, 0)
        return f"Adding the found marbles to the first {i} gives {gold} marbles in all.\n#### {gold}"
    if i % 3 == 0:
        return f"He has {i} and then {i + 3}, which makes {gold + 1} marbles.\n#### {gold + 1}"
    if i % 3 == 1:
        return "Let me think about the marbles and the bag and the marbles and the"
    return f"Counting both groups of marbles together, the total comes to {gold}.\n#### {gold}"


class ScriptedTeacher(Backend):
    """Answers each prompt from ``completion``; the problem is read back from the prompt."""

    name = "scripted"
    model = "scripted-teacher"
    batch_size = 4

    def generate(self, requests, sampling):
        out = []
        for req in requests:
            i = int(re.search(r"Sam has (\d+) marbles", req.messages[-1]["content"]).group(1))
            texts = [completion(i, k) for k in range(req.n)]
            out.append([Completion(t, "length" if t.endswith("the") else "stop", 40,
                                   len(t.split())) for t in texts])
        return out


def build(tmp_path: Path) -> tuple[Path, Path]:
    """(generated folder, filter output folder)."""
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps(problem(i)) + "\n" for i in range(PROBLEMS)))
    gen = tmp_path / "gen"
    generate("gsm8k-cot", str(source), str(gen), model="scripted-teacher",
             backend=ScriptedTeacher(), n=SAMPLES, temperature=0.8, progress=False)
    filtered = tmp_path / "filtered"
    config = tmp_path / "filters.yaml"
    config.write_text(json.dumps({"stages": STAGES}))  # JSON is YAML
    run_filter(gen, filtered, config=config)
    return gen, filtered
