"""``evolve:`` in a recipe: new problems from the generate section's problems, read out by the
problem preset, sampled by generate with the seeds, and labelled by the consensus preset.

The teacher is a tiny Llama trained until greedy decoding writes, for each seed, one new
problem (or, for one seed, no problem at all), and for each problem one solution: so every
stage sees real completions it can read. It solves the seed "A box holds 6 pens..." wrongly
(10, gold 24): its two samples agree, so only the seed's gold (not a consensus) drops them.
"""

import json

import pytest
import yaml

from distill import io
from distill.cli import main
from distill.datagen import load_prompt
from distill.errors import DistillError
from distill.recipe import run_recipe

SEEDS = {  # question: (gold, what the teacher writes for it with the evol prompt)
    "Sam has 5 apples and buys 3 more. How many apples?": ("8", (
        "New problem: Lena has 7 pears and buys 4 more, then eats 2. How many pears are left?")),
    "A box holds 6 pens. How many pens are in 4 boxes?": ("24", (
        "New problem: A crate holds 9 plums. A shop gets 5 crates and sells 12 plums. How many "
        "plums are left?")),
    "Ann has 9 cats and gives 4 away. How many cats?": ("5", "I like cats very much."),
}
SOLUTIONS = {  # question: what the teacher writes for it with the CoT prompt
    "Lena has 7 pears and buys 4 more, then eats 2. How many pears are left?":
        "She has 7 + 4 = 11 pears, then 11 - 2 = 9.\n#### 9",
    "A crate holds 9 plums. A shop gets 5 crates and sells 12 plums. How many plums are left?":
        "The shop gets 5 * 9 = 45 plums, then 45 - 12 = 33.\n#### 33",
    "Sam has 5 apples and buys 3 more. How many apples?": "He has 5 + 3 = 8 apples.\n#### 8",
    "A box holds 6 pens. How many pens are in 4 boxes?": "There are 6 + 4 = 10 pens.\n#### 10",
    "Ann has 9 cats and gives 4 away. How many cats?": "She keeps 9 - 4 = 5 cats.\n#### 5",
}
NEW = {text.removeprefix("New problem: "): question for question, (_, text) in SEEDS.items()
       if text.startswith("New problem:")}


def prompt(folder, name, kind, system, user):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "kind": kind, "system": system, "user": user,
                                    "sampling": {"temperature": 0, "max_tokens": 96}}))
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(model folder, evol prompt, CoT prompt): the tiny model, trained on both prompts."""
    from tiny import build_tiny_model, learn_by_heart

    folder = tmp_path_factory.mktemp("evolve-teacher")
    evol = prompt(folder, "evol-test", "problem", "Write a new problem.", "Seed: {{ question }}")
    cot = prompt(folder, "cot-test", "cot", "Solve it.", "Solve: {{ question }}")
    chats = [load_prompt(evol).render({"question": q}) + [{"role": "assistant", "content": t}]
             for q, (_, t) in SEEDS.items()]
    chats += [load_prompt(cot).render({"question": q}) + [{"role": "assistant", "content": t}]
              for q, t in SOLUTIONS.items()]
    texts = [m["content"] for chat in chats for m in chat]
    build_tiny_model(folder / "model", corpus=texts * 10, vocab_size=300, split_digits=True)
    return str(learn_by_heart(folder / "model", chats, steps=300)), evol, cot


def write_recipe(tmp_path, teacher, without=(), **changes):
    model, evol, cot = teacher
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": q, "answer": gold}) + "\n"
                             for i, (q, (gold, _)) in enumerate(SEEDS.items())))
    spec = {"name": "evolve", "teacher": {"model": model, "backend": "hf"},
            "evolve": {"prompt": str(evol), "n": 2, "progress": False},
            "generate": {"source": str(seeds), "prompt": str(cot), "n": 2, "progress": False},
            "filter": {"config": "consensus"}, **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if k not in without}))
    return path


def test_an_evolve_round_runs_from_a_recipe_then_skips_and_reruns(teacher, tmp_path, capsys):
    path, out = write_recipe(tmp_path, teacher), tmp_path / "run"
    summary = run_recipe(path, out)
    assert list(summary["stages"]) == ["evolve", "generate", "filter"]
    result = summary["stages"]["evolve"]["result"]
    assert result["tokens"] > 0 and {k: v for k, v in result.items() if k != "tokens"} == {
        "seeds": 3, "rows": 6, "generated": 6, "new_problems": 2, "dropped": 4}

    # the problem preset read the new problems out, with their seed's provenance
    new = io.read_rows(out / "evolve" / "filter" / "kept")
    assert {r["question"]: (r["parent_question"], r["parent_id"], r["gold"], r["evolved_by"])
            for r in new} == {q: (seed, f"s{list(SEEDS).index(seed)}", None, "evol-test")
                              for q, seed in NEW.items()}
    dropped = io.read_rows(out / "evolve" / "filter" / "dropped")
    assert sorted((r["dropped_by"], r["drop_reason"]) for r in dropped) == [
        ("dedupe", "duplicate (exact)"), ("dedupe", "duplicate (exact)"),
        ("new_problem", "no 'New problem:' line"), ("new_problem", "no 'New problem:' line")]

    # generate sampled the new problems and, by default, the seeds with their gold
    rows = io.read_rows(out / "generate")
    assert sorted({r["question"] for r in rows}) == sorted([*NEW, *SEEDS])
    for row in rows:
        source = json.loads(row["source"])
        if row["question"] in NEW:
            assert row["gold"] is None and source["parent_question"] == NEW[row["question"]]
            assert source["evolved_by"] == "evol-test" and row["source_id"] in \
                {r["id"] for r in new}
        else:
            assert row["gold"] == SEEDS[row["question"]][0] and row["source_id"] == source["id"]

    # consensus labelled the new problems; the seeds kept their gold, and the wrong seed
    # answer (agreed by both samples) was dropped against it
    kept = io.read_rows(out / "filter" / "kept")
    assert {r["question"]: (r["gold"], r["gold_from"]) for r in kept} == {
        **{q: (SOLUTIONS[q].rsplit(" ", 1)[-1], "consensus") for q in NEW},
        "Sam has 5 apples and buys 3 more. How many apples?": ("8", "source"),
        "Ann has 9 cats and gives 4 away. How many cats?": ("5", "source")}
    wrong = [r for r in io.read_rows(out / "filter" / "dropped") if r["dropped_by"] == "verify"]
    assert {(r["question"], r["answer"], r["gold"]) for r in wrong} == \
        {("A box holds 6 pens. How many pens are in 4 boxes?", "10", "24")}
    assert "**evolve** (done" in (out / "summary.md").read_text()
    assert "(evolve/filter/report.md)" in (out / "summary.md").read_text()

    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("finished before with these settings: skipped") == 3

    # a changed evolve option reruns evolve and everything after it (reusing every row)
    path = write_recipe(tmp_path, teacher, evolve={"prompt": str(teacher[1]), "n": 3,
                                                   "progress": False})
    summary = run_recipe(path, out)
    err = capsys.readouterr().err
    assert "skipped" not in err and all(f"[{s}] running" in err
                                        for s in ("evolve", "generate", "filter"))
    assert summary["stages"]["evolve"]["result"]["generated"] == 3
    assert summary["stages"]["generate"]["result"]["generated"] == 0
    run_recipe(path, out, from_stage="generate", until_stage="generate")
    err = capsys.readouterr().err
    assert "[evolve] finished before with these settings: skipped" in err
    assert "[generate] running" in err and "[filter]" not in err


def test_without_the_seeds_generate_samples_the_new_problems_only(teacher, tmp_path):
    path = write_recipe(tmp_path, teacher, evolve={"prompt": str(teacher[1]), "n": 1,
                                                   "keep_seeds": False, "progress": False})
    summary = run_recipe(path, tmp_path / "run", until_stage="generate")
    assert list(summary["stages"]) == ["evolve", "generate"]
    rows = io.read_rows(tmp_path / "run" / "generate")
    assert sorted(r["question"] for r in rows) == sorted([*NEW, *NEW])
    assert not (tmp_path / "run" / "filter").exists()


def test_task_seeds_keep_their_gold_and_no_new_problem_without_seeds_is_refused(teacher,
                                                                                 tmp_path):
    config = tmp_path / "none.yaml"  # a problem filter that keeps nothing
    config.write_text(yaml.safe_dump({"stages": [{"new_problem": {"header": "Never:"}}]}))
    evolve = {"prompt": str(teacher[1]), "max_tokens": 8, "filter": str(config),
              "keep_seeds": False, "progress": False}
    generate = {"task": "gsm8k", "split": "test", "limit": 2, "prompt": str(teacher[2]),
                "n": 1, "max_tokens": 8, "progress": False}
    out = tmp_path / "run"
    with pytest.raises(DistillError, match="no new problem was kept .*evolve/filter/report.md"):
        run_recipe(write_recipe(tmp_path, teacher, evolve=evolve, generate=generate), out)
    assert json.loads((out / "state.json").read_text())["generate"]["status"] == "failed"
    report = json.loads((out / "evolve" / "filter" / "report.json").read_text())
    assert report["stages"][0]["reasons"] == {"no 'Never:' line": 2}

    path = write_recipe(tmp_path, teacher, evolve={**evolve, "keep_seeds": True},
                        generate=generate, without=["filter"])
    summary = run_recipe(path, out)
    assert summary["stages"]["evolve"]["result"]["seeds"] == 2
    seeds = {r["id"]: r for r in map(json.loads, (out / "evolve" / "seeds.jsonl").open())}
    rows = io.read_rows(out / "generate")
    assert len(seeds) == len(rows) == 2
    assert {r["source_id"]: (r["question"], r["gold"]) for r in rows} == \
        {i: (r["question"], r["answer"]) for i, r in seeds.items()}


def test_a_sweep_over_generate_shares_the_evolve_stage(teacher, tmp_path):
    summary = run_recipe(write_recipe(tmp_path, teacher), tmp_path / "run",
                         until_stage="generate", sweep=["generate.n=1,2"])
    variants = tmp_path / "run" / "variants"
    assert (variants / "generate.n=2" / "evolve").resolve() == \
        (variants / "baseline" / "evolve").resolve()
    assert [v["shared"] for v in summary["variants"]] == [[], ["evolve"]]
    assert "evolve min" in (tmp_path / "run" / "sweep.md").read_text()


@pytest.mark.parametrize("changes, message", [
    ({"evolve": {"temprature": 1.0}}, "evolve: unknown key 'temprature'; did you mean 'temp"),
    ({"evolve": {"limit": 2}}, "evolve: 'limit' picks the seed problems: set it in generate:"),
    ({"evolve": {"prompt": "gsm8k-cot"}}, "evolve: prompt 'gsm8k-cot' is a cot prompt; evolve"),
    ({"evolve": {"n": 0}}, "evolve: n .* must be >= 1"),
    ({"evolve": {"keep_seeds": "no"}}, "evolve: keep_seeds: true or false"),
    ({"rounds": 2}, "evolve: not with rounds"),
    ({"without": ["generate"]}, "evolve: needs a generate section"),
])
def test_a_bad_evolve_section_is_named_before_anything_runs(tmp_path, changes, message, capsys):
    path = write_recipe(tmp_path, ("no-model", "gsm8k-evol", "gsm8k-cot"), **changes)
    with pytest.raises(DistillError, match=f"recipe.yaml: {message}"):
        run_recipe(path, tmp_path / "run")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "recipe.yaml: evolve:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
