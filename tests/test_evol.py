"""New problems from seed problems: a problem prompt writes them, the filter's problem preset
reads them out of the completions (new_problem, dedupe, decontaminate), and generate reads the
kept rows as its problems, with their provenance and resume."""

import json

import pytest
import yaml

from distill import io
from distill.cli import main
from distill.datagen import generate, load_prompt
from distill.datagen.backends.hf import HFBackend
from distill.errors import DistillError
from distill.filters.pipeline import run_filter
from distill.filters.problem import read_problem
from distill.tasks import load_task

SEED = "Sam has 5 apples and buys 3 more. How many apples does he have?"


@pytest.fixture(scope="module")
def hf(tiny_model):
    return HFBackend(tiny_model, batch_size=4)


def gen(hf, prompt, data, out, **kw):
    args = {"model": "tiny", "backend": hf, "temperature": 0, "max_tokens": 12, "progress": False}
    return generate(prompt, str(data), str(out), **{**args, **kw})


def any_text(tmp_path):
    """A problem preset that takes a whole completion as the problem: the tiny model writes no
    "New problem:" line (random weights), and its rows all stop at the token limit."""
    config = tmp_path / "any-text.yaml"
    config.write_text(yaml.safe_dump({"stages": [
        {"new_problem": {"header": "", "min_chars": 1, "question_mark": False,
                         "drop_truncated": False}},
        {"dedupe": {"method": "exact", "field": "question"}}]}))
    return config


@pytest.mark.parametrize("name", ["gsm8k-evol", "self-instruct"])
def test_problem_prompts_render_a_seed_and_show_the_format(name):
    pf = load_prompt(name)
    assert pf.kind == "problem"
    messages = pf.render({"question": SEED})
    assert SEED in messages[-1]["content"] and "New problem:" in messages[-1]["content"]
    shots = [m["content"] for m in messages if m["role"] == "assistant"]
    assert shots and all(read_problem(s, "New problem:")[0] for s in shots)


def test_evol_output_is_read_again_as_problems_with_provenance_and_resume(hf, problems, tmp_path):
    evol = tmp_path / "evol"
    gen(hf, "gsm8k-evol", problems, evol, n=2, temperature=1.0)  # greedy: only newlines
    assert {r["kind"] for r in io.read_rows(evol)} == {"problem"}
    with pytest.raises(DistillError, match="distill filter --data .* --out PROBLEMS"):
        gen(hf, "gsm8k-cot", evol, tmp_path / "wrong")  # the seeds' questions, not the new ones
    assert not (tmp_path / "wrong").exists()

    run_filter(evol, tmp_path / "problems", config=any_text(tmp_path))
    new = io.read_rows(tmp_path / "problems" / "kept")
    seeds = {r["id"]: r for r in map(json.loads, problems.read_text().splitlines())}
    evol_rows = {r["id"]: r for r in io.read_rows(evol)}
    assert new and len({r["question"] for r in new}) == len(new)
    for row in new:
        parent = evol_rows[row["id"]]
        assert row["parent_id"] == parent["source_id"] and row["parent_id"] in seeds
        assert row["parent_question"] == seeds[row["parent_id"]]["question"]
        assert row["question"].split()
        assert " ".join(row["question"].split()) in " ".join(parent["completion"].split())
        assert row["gold"] is None and row["evolved_by"] == "gsm8k-evol"

    cot = tmp_path / "cot"
    first = gen(hf, "gsm8k-cot", tmp_path / "problems", cot)
    rows = io.read_rows(cot)
    assert first.rows_written == len(rows) == len(new)
    by_problem = {r["id"]: r for r in new}
    for row in rows:
        problem = by_problem[row["source_id"]]
        assert row["question"] == problem["question"] and row["gold"] is None
        assert problem["question"] in row["messages"][-1]["content"]
        source = json.loads(row["source"])
        assert (source["parent_id"], source["evolved_by"]) == (problem["parent_id"],
                                                                 "gsm8k-evol")
    again = gen(hf, "gsm8k-cot", tmp_path / "problems", cot)
    assert (again.rows_written, again.rows_reused) == (0, len(rows))


def test_the_command_line_chain_runs(tiny_model, problems, tmp_path, capsys):
    common = ["--teacher", tiny_model, "--backend", "hf", "--temperature", "1",
              "--max-tokens", "8", "--no-progress"]
    assert main(["generate", "--prompt", "self-instruct", "--data", str(problems),
                 "--out", str(tmp_path / "evol"), *common]) == 0
    assert main(["generate", "--prompt", "gsm8k-cot", "--data", str(tmp_path / "evol"),
                 "--out", str(tmp_path / "cot"), *common]) == 2
    assert "distill filter --data" in capsys.readouterr().err
    assert main(["filter", "--data", str(tmp_path / "evol"), "--out",
                 str(tmp_path / "problems")]) == 0  # the problem preset, by the prompt's kind
    report = json.loads((tmp_path / "problems" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["new_problem", "dedupe", "decontaminate"]
    assert report["stages"][0]["reasons"] == {"no 'New problem:' line": 6}


def evolved(problem_id, completion, finish_reason="stop", k=0):
    return {"id": f"{problem_id}-{k}", "source_id": problem_id, "question": SEED,
            "gold": "8", "template": "gsm8k-evol", "kind": "problem",
            "completion": completion, "finish_reason": finish_reason}


def test_problem_preset_cleans_dedupes_and_decontaminates(tmp_path):
    copied = load_task("gsm8k", "test", hub=False)[0]["question"]
    new = "Lena has 7 pears and buys 4 more. She gives 2 to her brother. How many pears now?"
    rows = [
        evolved("a", f"Sure!\n**New problem:** {new}\n\nSolution: 7 + 4 - 2 = 9"),
        evolved("a", f"New problem: {new}\nAnswer: 9", k=1),            # a repeat of a-0
        evolved("b", "Here is a problem about pears and apples for you."),
        evolved("c", "New problem: A farm"),                            # too short
        evolved("d", "New problem: A crate holds 9 oranges and a shop gets", "length"),
        evolved("e", f"New problem: {SEED.upper()}"),
        evolved("f", "New problem: " + "Tom buys a pen. " * 80),        # too long
        evolved("g", f"New problem: {copied}"),                          # a GSM8K test item
        evolved("h", "New problem: A box has 3 x 5 = 15 marbles. He gives 1 away, so 14."),
    ]
    data = tmp_path / "evol.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_filter(data, tmp_path / "out", config="problem")
    kept = io.read_rows(tmp_path / "out" / "kept")
    assert [(r["id"], r["question"], r["gold"], r["parent_id"]) for r in kept] == \
        [("a-0", new, None, "a")]
    dropped = {r["id"]: (r["dropped_by"], r["drop_reason"])
               for r in io.read_rows(tmp_path / "out" / "dropped")}
    assert dropped == {
        "a-1": ("dedupe", dropped["a-1"][1]),
        "b-0": ("new_problem", "no 'New problem:' line"),
        "c-0": ("new_problem", "too short"),
        "d-0": ("new_problem", "truncated"),
        "e-0": ("new_problem", "same as its seed"),
        "f-0": ("new_problem", "too long"),
        "g-0": ("decontaminate", "13-gram overlap with gsm8k test"),
        "h-0": ("new_problem", "no question")}
    hits = {s["stage"]: s for s in result.stages}["decontaminate"]["hits"]
    assert [(h["row_id"], h["field"]) for h in hits] == [("g-0", "question")]
