"""``distill eval --data`` reads any dataset through ``distill.data.read`` (files, distill and
published folders, save_to_disk folders, globs, hub ids) on the tiny model; benchmark names
read as before."""

import json
import os
import subprocess
import sys

import datasets
import pytest
from distilled import build

from distill import io
from distill.cli import main
from distill.errors import DistillError
from distill.publish.publish import publish
from distill.recipe import _task_file
from distill.recipe_check import check_recipe
from distill.tasks import load_task

ROWS = [{"uid": f"u{i}", "problem_text": f"What is {i} plus {i}?", "solution": str(2 * i)}
        for i in range(3)]


def _eval(tiny_model, data, out, *flags) -> int:
    return main(["eval", "--model", tiny_model, "--data", str(data), "--out", str(out),
                 "--backend", "hf", "--max-tokens", "4", "--no-progress", *flags])


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A filter output of a scripted generate, and its published folder (train + test)."""
    tmp = tmp_path_factory.mktemp("distilled")
    _, filtered = build(tmp)
    publish(filtered / "kept", tmp / "hub", test_size=0.25)
    return filtered, tmp / "hub"


def test_jsonl_with_other_column_names_and_field(tiny_model, tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert _eval(tiny_model, path, tmp_path / "bare") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (f"{path}:1: no question or answer found (columns found: uid, problem_text, "
            "solution); name the column with --field question=COLUMN --field answer=COLUMN"
            ) in err
    assert _eval(tiny_model, path, tmp_path / "out", "--field", "question=problem_text",
                 "--field", "answer=solution", "--field", "id=uid") == 0
    items = io.read_rows(tmp_path / "out")
    assert [(r["id"], r["question"], r["gold"]) for r in items] == [
        (r["uid"], r["problem_text"], r["solution"]) for r in ROWS]


def test_distill_dataset_folder(tiny_model, distilled, tmp_path):
    """A filter output evaluates on its reference answers (gold), not the teacher's."""
    filtered, _ = distilled
    kept = io.read_rows(filtered / "kept")
    assert _eval(tiny_model, filtered, tmp_path / "out") == 0
    items = io.read_rows(tmp_path / "out")
    assert [(r["id"], r["question"], r["gold"]) for r in items] == [
        (r["id"], r["question"], r["gold"]) for r in kept]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["items"] == len(kept)


def test_published_folder_and_its_splits(tiny_model, distilled, tmp_path, capsys):
    filtered, hub = distilled
    kept = io.read_rows(filtered / "kept")
    assert _eval(tiny_model, hub, tmp_path / "train") == 0  # default: the reader's train
    assert _eval(tiny_model, hub, tmp_path / "test", "--split", "test") == 0
    train, test = io.read_rows(tmp_path / "train"), io.read_rows(tmp_path / "test")
    assert train and test and len(train) + len(test) == len(kept)
    assert {r["id"] for r in train} | {r["id"] for r in test} == {r["id"] for r in kept}
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["split"] == "test"
    assert _eval(tiny_model, hub, tmp_path / "x", "--split", "validation") == 2
    assert "no split 'validation'; it has: " in capsys.readouterr().err


def test_save_to_disk_folder(tiny_model, tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(saved)
    assert _eval(tiny_model, saved, tmp_path / "out", "--split", "test", "--field",
                 "question=problem_text", "--field", "answer=solution") == 0
    assert [r["gold"] for r in io.read_rows(tmp_path / "out")] == ["0", "2", "4"]


def test_glob_of_files(tmp_path):
    for i, row in enumerate(ROWS):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps(
            {"question": row["problem_text"], "answer": row["solution"]}) + "\n")
    got = load_task(str(tmp_path / "part*.jsonl"))
    assert [(r["question"], r["answer"]) for r in got] == [
        (r["problem_text"], r["solution"]) for r in ROWS]
    assert len({r["id"] for r in got}) == 3
    assert load_task(str(tmp_path / "part*.jsonl"), limit=2) == got[:2]


def test_hub_id_offline_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "eval", "--data",
                           "nobody/no-such-dataset", "--out", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nobody/no-such-dataset: not a local file or folder" in lines[0]
    assert not (tmp_path / "out").exists()


def test_benchmark_names_unchanged(tiny_model, tmp_path, capsys):
    assert load_task("gsm8k", hub=False) == load_task("gsm8k", "test", hub=False)
    assert _eval(tiny_model, "gsm8k", tmp_path / "g", "--limit", "2") == 0
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert (m["task"], m["split"], m["items"]) == ("gsm8k", "test", 2)
    assert [r["id"] for r in io.read_rows(tmp_path / "g")] == ["gsm8k-test-0", "gsm8k-test-1"]
    assert _eval(tiny_model, "gsm8k", tmp_path / "f", "--field", "question=problem") == 2
    assert "--field applies to a file, folder or hub dataset; gsm8k is a shipped benchmark" in (
        capsys.readouterr().err)


def test_recipe_eval_takes_the_data_keys(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(saved)
    section = {"data": str(saved), "split": "test", "subset": None, "revision": None,
               "field": {"question": "problem_text", "answer": "solution"}}
    check_recipe({"eval": section}, tmp_path / "r.yaml")
    with pytest.raises(DistillError, match="unknown key 'fields'; did you mean 'field'"):
        check_recipe({"eval": {"fields": {}}}, tmp_path / "r.yaml")
    cfg = {"task": str(saved), "split": "test", "field": ["question=problem_text",
                                                          "answer=solution"], "offset": 1}
    items = _task_file(cfg, tmp_path / "items.jsonl", default_split=None)
    assert [json.loads(s)["gold"] for s in items.read_text().splitlines()] == ["2", "4"]
    assert cfg == {}
