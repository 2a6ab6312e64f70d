"""``distill run``: a recipe through every stage on the tiny model, skipping what is done."""

import json

import pytest
import yaml
from conftest import REPO

from distill import io
from distill.cli import main
from distill.errors import DistillError
from distill.models import model_files
from distill.recipe import run_recipe


def recipe(tmp_path, tiny_model, **changes):
    spec = {
        "name": "tiny", "teacher": {"model": tiny_model, "backend": "hf"},
        "student": {"model": tiny_model},
        "generate": {"task": "gsm8k", "split": "train", "limit": 4, "n": 2, "max_tokens": 16,
                     "temperature": 0.7, "progress": False},
        "filter": {"stages": [{"quality": {"min_chars": 1, "drop_truncated": False,
                                           "min_unique_word_ratio": None,
                                           "max_repeated_ngram_share": None}}]},
        "publish": {"test_size": 0.25},
        "train": {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 1,
                  "report_to": "none", "max_length": 256, "on_bad_row": "drop",
                  "max_dropped_fraction": 1.0},
        "eval": {"task": "gsm8k", "limit": 3, "backend": "hf", "max_tokens": 8,
                 "progress": False},
        **changes,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_recipe_runs_every_stage_then_skips_them(tiny_model, tmp_path, capsys):
    path, out = recipe(tmp_path, tiny_model), tmp_path / "run"
    summary = run_recipe(path, out)
    assert list(summary["stages"]) == ["generate", "filter", "publish", "train", "eval"]
    assert summary["stages"]["generate"]["result"]["rows"] == 8
    assert (out / "filter" / "report.md").exists() and (out / "publish" / "README.md").exists()
    assert (out / "train" / "config.json").exists()
    ev = summary["stages"]["eval"]["result"]
    assert set(ev["runs"]) == {"baseline", "student"} and ev["runs"]["student"]["items"] == 3
    assert "difference_ci" in ev["versus_baseline"]
    md = (out / "summary.md").read_text()
    assert "| student |" in md and "eval/compare/compare.md" in md
    assert json.loads((out / "summary.json").read_text())["recipe"] == "tiny"

    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("finished before with these settings: skipped") == 5

    # a changed eval reruns eval only, here adding the teacher with its own settings;
    # --from train reruns train and eval
    changed = {"task": "gsm8k", "limit": 2, "backend": "hf", "max_tokens": 8, "progress": False,
               "teacher": {"prompt": "gsm8k-cot-8shot", "shots": 1}}
    summary = run_recipe(recipe(tmp_path, tiny_model, eval=changed), out)
    err = capsys.readouterr().err
    assert err.count("skipped") == 4 and "[eval] running" in err
    ev = summary["stages"]["eval"]["result"]
    assert {n: r["shots"] for n, r in ev["runs"].items()} == {"baseline": 0, "student": 0,
                                                              "teacher": 1}
    assert "difference_ci" in ev["versus_baseline"] and "| teacher |" in (out / "summary.md").read_text()
    run_recipe(path, out, from_stage="train", until_stage="train")
    err = capsys.readouterr().err
    assert "[train] running" in err and "[eval]" not in err and err.count("skipped") == 3

    # a changed train reruns train and eval: the student's answers come from its new weights,
    # not from the folder of the last student's
    train = {**yaml.safe_load(path.read_text())["train"], "max_steps": 3}
    run_recipe(recipe(tmp_path, tiny_model, eval=changed, train=train), out)
    err = capsys.readouterr().err
    assert "[train] running" in err and "[eval] running" in err
    answers = io.read_manifest(out / "eval" / "student" / "generations" / "greedy")
    assert answers["row_key"]["model_files"] == model_files(str(out / "train"))
    assert len(io.read_rows(out / "eval" / "student" / "generations" / "greedy")) == 2


def test_bad_recipes_are_named(tmp_path, tiny_model):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate: {task: gsm8k}\nevaluate: {}\n")
    with pytest.raises(DistillError, match="unknown recipe field 'evaluate'"):
        run_recipe(bad, tmp_path / "run")
    with pytest.raises(DistillError, match="--from sft: the recipe's stages are"):
        run_recipe(recipe(tmp_path, tiny_model), tmp_path / "run", from_stage="sft")


@pytest.mark.slow
def test_cpu_quickstart_recipe(tmp_path):
    summary = run_recipe(REPO / "recipes" / "cpu-quickstart.yaml", tmp_path / "run")
    assert summary["stages"]["eval"]["status"] == "done"
    assert (tmp_path / "run" / "eval" / "compare" / "accuracy.png").exists()


def test_training_problems_and_held_out_items_come_from_one_shuffled_order(tmp_path):
    from distill.recipe import _task_file

    common = {"task": "mawps", "split": "test", "shuffle": True, "shuffle_seed": 0}
    train = {**common, "offset": 0, "limit": 50, "n": 4}
    held_out = {**common, "offset": 50, "limit": 50}
    a = _task_file(train, tmp_path / "a.jsonl", "train").read_text().splitlines()
    b = _task_file(held_out, tmp_path / "b.jsonl", "test").read_text().splitlines()
    ids = lambda lines: {json.loads(x)["id"] for x in lines}
    assert len(ids(a)) == len(ids(b)) == 50 and not ids(a) & ids(b)
    assert train == {"n": 4}  # slicing options are consumed, the rest goes to the stage
    again = _task_file({**common, "offset": 0, "limit": 50}, tmp_path / "c.jsonl", "train")
    assert again.read_text().splitlines() == a


def test_generate_leaves_out_the_held_out_items_and_their_repeats(tmp_path):
    """MAWPS repeats problems under other ids, spaced or punctuated otherwise: a training
    problem with a held-out item's text is left out with the item itself."""
    from distill.recipe import _question_key, _task_file, held_out

    common = {"task": "mawps", "split": "test", "shuffle": True, "shuffle_seed": 0}
    spec = {"generate": {**common, "offset": 0, "limit": 1200},
            "eval": {**common, "offset": 300, "limit": 300, "shots": 0}}
    keys = held_out(spec)
    problems = _task_file(dict(spec["generate"]), tmp_path / "p.jsonl", "train", held_out=keys)
    rows = [json.loads(x) for x in problems.read_text().splitlines()]
    items = [json.loads(x) for x in
             _task_file(dict(spec["eval"]), tmp_path / "e.jsonl", None).read_text().splitlines()]
    assert len(keys) == len({_question_key(r["question"]) for r in items})
    assert not {r["id"] for r in rows} & {r["id"] for r in items}
    assert not {_question_key(r["question"]) for r in rows} & keys
    assert len(rows) == 875  # 900 outside items 300-599, 25 of them repeat a held-out item
    assert _question_key("Fred has 40 baseball cards. Keith bought 22 of Fred's  cards?") == \
        _question_key("Fred has 40 baseball cards . Keith bought 22 of Fred 's cards ?")
    assert held_out({"eval": {"task": "mawps", "limit": 5}}) == set()  # no slice: no held-out


def test_a_recipe_never_samples_its_held_out_items(tiny_model, tmp_path, capsys):
    common = {"task": "mawps", "split": "test", "shuffle": True, "shuffle_seed": 0}
    generate = {**common, "offset": 0, "limit": 8, "n": 1, "max_tokens": 4, "progress": False}
    evals = {**common, "offset": 4, "limit": 4, "backend": "hf", "max_tokens": 4}
    path, out = recipe(tmp_path, tiny_model, generate=generate, eval=evals), tmp_path / "run"
    summary = run_recipe(path, out, until_stage="generate")
    assert summary["stages"]["generate"]["result"]["rows"] == 4  # items 4-7 are eval's
    assert "4 of 8 problems left out: the text of a held-out eval item" in capsys.readouterr().err
    # other held-out items: other problems to sample, so generate runs again
    run_recipe(recipe(tmp_path, tiny_model, generate=generate, eval={**evals, "offset": 6}),
               out, until_stage="generate")
    assert "[generate] running" in capsys.readouterr().err
    assert len((out / "problems.jsonl").read_text().splitlines()) == 6
    # fewer problems: the rows of those gone would be read as this run's; the recipe's way out
    fewer = recipe(tmp_path, tiny_model, generate=generate, eval={**evals, "offset": 2})
    with pytest.raises(DistillError, match="4 of its 6 rows are not in this plan.*"
                                           "`regenerate: true` in the stage's section"):
        run_recipe(fewer, out, until_stage="generate")
    assert len(io.read_ids(out / "generate")) == 6  # nothing lost
    summary = run_recipe(recipe(tmp_path, tiny_model, generate={**generate, "regenerate": True},
                                eval={**evals, "offset": 2}), out, until_stage="generate")
    assert summary["stages"]["generate"]["result"]["rows"] == 4  # items 0, 1, 6 and 7
    with pytest.raises(DistillError, match="all 8 problems of the problems slice are held-out"):
        run_recipe(recipe(tmp_path, tiny_model, generate=generate, eval={**evals, "offset": 0,
                                                                          "limit": 8}), out)
