"""``rounds:`` (STaR: round k+1 samples with round k's student and trains on the union) and
``--sweep`` (variants sharing the stages they do not change), on the tiny model."""

import json

import pyarrow as pa
import pytest
import yaml
from test_recipe import recipe

from distill import io
from distill.cli import main
from distill.errors import DistillError
from distill.recipe import run_recipe
from distill.rounds import _generate_unsolved, _later_round, solved

# parse and verify without dropping, so the rows carry `correct` (the tiny model solves
# nothing: every problem stays unsolved and round 2 samples all of them again)
VERIFY = {"stages": [{"parse": {"drop_missing": False}}, {"verify": {"drop_incorrect": False}},
                     {"quality": {"min_chars": 1, "drop_truncated": False,
                                  "min_unique_word_ratio": None,
                                  "max_repeated_ngram_share": None}}]}


def test_two_rounds_sample_with_the_first_student_train_on_the_union_and_resume(
        tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    # round 2's training fails (every row longer than max_length, none may be dropped)
    failing = recipe(tmp_path, tiny_model, filter=VERIFY, rounds=[
        {}, {"train": {"max_length": 8, "max_dropped_fraction": 0.0}}])
    with pytest.raises(DistillError):
        run_recipe(failing, out)
    state = json.loads((out / "round-2" / "state.json").read_text())
    assert {s: r["status"] for s, r in state.items()} == {
        "generate": "done", "filter": "done", "publish": "done", "train": "failed"}
    capsys.readouterr()

    summary = run_recipe(recipe(tmp_path, tiny_model, filter=VERIFY, rounds=2), out)
    err = capsys.readouterr().err
    # only what is missing reruns: round 1 whole, round 2 up to publish are kept
    assert err.count("finished before with these settings: skipped") == 8
    assert err.count("[train] running") == 1 and err.count("[eval] running") == 1
    assert "[generate] running" not in err

    first, second = out / "round-1", out / "round-2"
    manifest = io.read_manifest(second / "generate")
    assert manifest["model"] == str(first / "train")  # round 2 samples with round 1's student
    assert (second / "problems.jsonl").read_text().count("\n") == 4  # none solved: all again
    pair = lambda rows: {(r["question"], r["completion"]) for r in rows}
    before = io.read_rows(first / "filter" / "kept")
    now = io.read_rows(second / "filter" / "kept")
    union = io.read_rows(second / "union")
    assert len(union) == len(before) + len(pair(now) - pair(before))  # repeats dropped
    assert pair(union) == pair(before) | pair(now)
    assert len({r["id"] for r in union}) == len(union)
    run = json.loads((second / "train" / "distill_sft.json").read_text())
    assert (run["model"], run["data"]) == (tiny_model, str(second / "union"))  # from scratch

    assert [r["run"] for r in summary["by_round"]] == ["untrained", "round 1", "round 2"]
    assert "difference_ci" in summary["by_round"][2]
    ev = summary["rounds"][1]["stages"]["eval"]["result"]
    assert set(ev["runs"]) == {"student"}  # the untrained student is evaluated once, round 1
    md = (out / "summary.md").read_text()
    assert "| 1 |" in md and "| 2 |" in md and "| untrained |" in md
    assert (out / "rounds" / "accuracy.png").exists() and "rounds/accuracy.png" in md


def _dataset(folder, rows):
    io.write_dataset(folder, pa.Table.from_pylist(rows), {"kind": "filter"}, shard_rows=100)


def test_later_rounds_sample_only_the_problems_no_round_solved(tiny_model, tmp_path):
    first = tmp_path / "round-1"
    first.mkdir()
    (tmp_path / "problems.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "question": f"q{i}", "answer": str(i)}) + "\n"
        for i in range(4)))
    # p0 kept and correct; p1 correct but dropped (always solved: pass rate 1); p2 wrong
    _dataset(first / "filter" / "kept", [{"source_id": "p0", "correct": True}])
    _dataset(first / "filter" / "dropped", [{"source_id": "p1", "correct": True},
                                            {"source_id": "p2", "correct": False}])
    assert solved(first) == {"p0", "p1"}
    here = tmp_path / "round-2"
    here.mkdir()
    later = {"teacher": {"model": tiny_model, "backend": "hf"},
             "generate": {"source": str(here / "problems.jsonl"), "n": 1, "max_tokens": 4,
                          "progress": False}}
    round_1 = {"generate": {"source": str(tmp_path / "problems.jsonl")}}
    result = _generate_unsolved(later, here, first=round_1, earlier=[first], every=False)
    assert result["problems"] == 2
    assert {r["source_id"] for r in io.read_rows(here / "generate")} == {"p2", "p3"}


def test_continue_trains_round_k_student_and_later_rounds_skip_the_baseline(tiny_model, tmp_path):
    spec = yaml.safe_load(recipe(tmp_path, tiny_model).read_text())
    out = tmp_path / "run"
    again = _later_round(spec, {}, out, 3)
    assert again["student"] == {"model": tiny_model}
    assert again["teacher"]["model"] == str(out / "round-2" / "train")
    assert again["train"]["data"] == str(out / "round-3" / "union")
    assert again["eval"]["baseline"] is False and "teacher" not in again["eval"]
    assert "task" not in again["generate"] and "limit" not in again["generate"]
    onward = _later_round(spec, {"continue": True}, out, 3)
    assert onward["student"] == {"model": str(out / "round-2" / "train")}


def test_sweep_shares_the_generation_and_compares_the_variants(tiny_model, tmp_path, capsys):
    students = {"task": "gsm8k", "limit": 3, "backend": "hf", "max_tokens": 8, "progress": False,
                "baseline": False}  # the students only: the variants are compared
    path = recipe(tmp_path, tiny_model, filter=VERIFY, eval=students)
    out = tmp_path / "sweep"
    flags = ["--sweep", "train.max_steps=1,2", "--sweep", "rounds=1,2"]
    assert main(["run", str(path), "--out", str(out), *flags]) == 0
    captured = capsys.readouterr()
    # baseline round 1, then round 2 of the rounds=2 variant: one generation per sampler
    assert captured.err.count("[generate] running") == 2
    assert "# Sweep" in captured.out
    variants = out / "variants"
    base, steps, rounds = (variants / "baseline" / "round-1",
                           variants / "train.max_steps=2" / "round-1", variants / "rounds=2")
    for stage in ("generate", "filter", "publish"):
        assert (steps / stage).is_symlink()
        assert (steps / stage).resolve() == (base / stage).resolve()
    assert not (steps / "train").is_symlink() and (steps / "train" / "config.json").exists()
    assert len([p for p in variants.glob("*/round-*/generate") if not p.is_symlink()]) == 2
    # rounds=2 is the baseline's round 1, linked whole, then a round 2 of its own
    for stage in ("generate", "filter", "publish", "train", "eval"):
        assert (rounds / "round-1" / stage).resolve() == (base / stage).resolve()
    assert not (rounds / "round-2" / "generate").is_symlink()
    assert io.read_manifest(rounds / "round-2" / "generate")["model"] == \
        str(rounds / "round-1" / "train")

    report = json.loads((out / "sweep.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["baseline", "train.max_steps=2", "rounds=2"]
    assert rows["train.max_steps=2"]["shared"] == ["generate", "filter", "publish"]
    assert rows["rounds=2"]["shared"] == ["generate", "filter", "publish", "train", "eval"]
    assert all(rows[v]["difference_ci"] is not None for v in ("train.max_steps=2", "rounds=2"))
    compared = json.loads((out / "compare" / "compare.json").read_text())["runs"]
    assert compared[2]["path"] == str(rounds / "round-2" / "eval" / "student")
    assert rows["baseline"]["generated_tokens"] > 0 and rows["baseline"]["trained_tokens"] > 0
    assert rows["rounds=2"]["generated_tokens"] > rows["baseline"]["generated_tokens"]
    assert rows["baseline"]["seconds"]["train"] > 0
    md = (out / "sweep.md").read_text()
    assert all(f"| {v} |" in md for v in rows) and "compare/accuracy.png" in md
    assert "| train min |" in md and "evolve min" not in md  # the stages the variants ran

    capsys.readouterr()  # a rerun skips every stage of every variant
    run_recipe(path, out, sweep=["train.max_steps=1,2", "rounds=1,2"])
    assert capsys.readouterr().err.count("finished before with these settings: skipped") == 20
    # --from eval reruns each eval once: rounds=2 links the baseline's fresh round-1 eval
    run_recipe(path, out, sweep=["train.max_steps=1,2", "rounds=1,2"], from_stage="eval")
    err = capsys.readouterr().err
    assert err.count("[eval] running") == 3 and err.count("with these settings: shared") == 1


def test_bad_sweeps_and_rounds_name_the_key(tiny_model, tmp_path, capsys):
    path = recipe(tmp_path, tiny_model)
    for flag, message in [("train.max_step=1,2", "--sweep train.max_step: .*'max_steps'"),
                          ("trian.max_steps=1,2", "unknown section 'trian'; did you mean 'train'"),
                          ("train.max_steps", "give KEY=V1,V2"),
                          ("max_steps=1,2", "unknown section 'max_steps'")]:
        with pytest.raises(DistillError, match=message):
            run_recipe(path, tmp_path / "run", sweep=[flag])
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--sweep",
                 "generate.temprature=0.1,0.9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'temperature'" in err
    assert not (tmp_path / "run").exists()

    for rounds, message in [(0, "rounds: must be >= 1"),
                            ([{}, {"problem": "all"}], r"rounds\[2\]: .*mean 'problems'"),
                            ([{"continue": True}], r"rounds\[1\]: continue: applies from round 2"),
                            ([{}, {"train": {"max_step": 1}}], r"rounds\[2\]: train: unknown key"),
                            ("two", "a number of rounds")]:
        bad = recipe(tmp_path, tiny_model, rounds=rounds)
        with pytest.raises(DistillError, match=message):
            run_recipe(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**yaml.safe_load(recipe(tmp_path, tiny_model).read_text()),
                                     "sweep": {"train.max_steps": [1, 1]}}))
    with pytest.raises(DistillError, match="a value repeats"):
        run_recipe(sweep, tmp_path / "run")


def test_a_sweep_value_may_change_several_options_of_a_section(tiny_model, tmp_path):
    from distill.sweep import folder_name, sweep_variants

    base = yaml.safe_load(recipe(tmp_path, tiny_model).read_text())
    block = {"train": [{}, {"max_steps": 2, "learning_rate": 0.1}]}
    variants = dict(sweep_variants({**base, "sweep": block}, [], "r.yaml"))
    assert list(variants) == ["baseline", "train.max_steps=2,train.learning_rate=0.1"]
    changed = variants["train.max_steps=2,train.learning_rate=0.1"]["train"]
    assert changed == {**base["train"], "max_steps": 2, "learning_rate": 0.1}
    assert variants["baseline"]["train"] == base["train"]
    with pytest.raises(DistillError, match=r"sweep: train: .*unknown key 'max_step'"):
        sweep_variants({**base, "sweep": {"train": [{}, {"max_step": 2}]}}, [], "r.yaml")
    named = dict(sweep_variants({**base, "sweep": {"train": [{}, {"variant": "fast",
                                                                 "max_steps": 1}]}}, [], "r"))
    assert list(named) == ["baseline", "fast"] and named["fast"]["train"]["max_steps"] == 1
    with pytest.raises(DistillError, match="two variants are named 'fast'"):
        sweep_variants({**base, "sweep": {"train": [{}, {"variant": "fast", "max_steps": 1},
                                                    {"variant": "fast", "max_steps": 2}]}}, [], "r")
    rounds = dict(sweep_variants({**base, "sweep": {"rounds": [1, [{}, {"generate": {"n": 2}}]]}},
                                 [], "r"))
    name = 'rounds=[{}, {"generate": {"n": 2}}]'
    assert list(rounds) == ["baseline", name]
    assert folder_name(name) == "rounds=-,-generate-n-2"  # readers glob their paths: no [ { "
    with pytest.raises(DistillError, match="give train.KEY, .* or a mapping of train options"):
        sweep_variants(base, ["train=1,2"], "r.yaml")
