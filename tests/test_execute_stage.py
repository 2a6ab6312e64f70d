"""The execute filter stage: programs run in the sandbox, answers from their output."""

import copy
import importlib.util
import sys

import pytest

from distill import io
from distill.filters.base import RowStage
from distill.filters.execute import EXEC_FIELDS, Execute
from distill.filters.pipeline import run_filter, write_rows
from distill.filters.stages import build_stages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
HAVE_ANSWERS = importlib.util.find_spec("distill.answers") is not None


def rows() -> list[dict]:
    def row(i, code, gold="42"):
        return {"id": i, "kind": "pot" if code is not None else "cot", "code": code,
                "answer": None, "answer_format": None, "gold": gold}
    return [
        row("good", "apples = 6\nbaskets = 7\nprint('working...')\nprint(apples * baskets)\n"),
        row("crash", "print('start')\nprint(1 / 0)\n"),
        row("loop", "while True:\n    pass\n"),
        row("silent", "x = 6 * 7\n"),
        row("blank-lines", "print(' 41 ')\nprint('  ')\nprint()\n", gold="41"),
        {"id": "cot", "kind": "cot", "code": None, "answer": "42", "answer_format": "boxed",
         "gold": "42"},
        row("text", "print('The answer is', 6 * 7)\n"),
    ]


@pytest.fixture(scope="module")
def executed():
    data = rows()
    cot = copy.deepcopy(data[5])
    stage = Execute(timeout=3, workers=2, progress=False)  # slack for a loaded CI machine
    kept, dropped = stage.apply(data)
    return stage, kept, dropped, cot


def test_kept_and_dropped(executed):
    stage, kept, dropped, _ = executed
    assert [r["id"] for r in kept] == ["good", "blank-lines", "cot", "text"]
    assert {r["id"]: r["drop_reason"] for r in dropped} == {
        "crash": "error", "loop": "timeout", "silent": "no output"}
    assert all(r["dropped_by"] == "execute" for r in dropped)
    assert stage.stats.to_dict() == {"seen": 7, "kept": 4, "dropped": 3, "reasons": {
        "error": 1, "timeout": 1, "no output": 1}}
    assert stage.report() == {"programs": 6, "failures": {"error": 1, "timeout": 1,
                                                          "no output": 1},
                              "mean_seconds": stage.report()["mean_seconds"]}


def test_answers_and_exec_columns(executed):
    _, kept, dropped, cot = executed
    by_id = {r["id"]: r for r in kept + dropped}
    good = by_id["good"]
    assert good["answer"] == "42" and good["answer_format"] == "program"
    assert set(good["exec"]) == set(EXEC_FIELDS)
    assert good["exec"]["stdout"] == "working...\n42\n" and good["exec"]["returncode"] == 0
    assert good["exec"]["timed_out"] is False and good["exec"]["seconds"] > 0
    assert by_id["blank-lines"]["answer"] == "41"
    text = by_id["text"]["answer"]
    assert text == "The answer is 42"  # not a number: the stripped line
    crash = by_id["crash"]
    assert crash["exec"]["returncode"] == 1 and "ZeroDivisionError" in crash["exec"]["stderr"]
    assert crash["exec"]["stdout"] == "start\n" and crash["answer"] is None
    loop = by_id["loop"]
    assert loop["exec"]["timed_out"] is True and loop["answer"] is None
    assert by_id["silent"]["exec"]["stdout"] == "" and by_id["silent"]["answer"] is None
    assert by_id["cot"] == cot  # no code: untouched


@pytest.mark.skipif(not HAVE_ANSWERS, reason="distill.answers not there yet")
def test_answer_is_normalized():
    data = [{"id": "n", "code": "print(1234.50)\nprint('1,234.0')\n", "answer": None}]
    kept, _ = Execute(progress=False).apply(data)
    from distill.answers import normalize_number

    assert kept[0]["answer"] == normalize_number("1,234.0") == "1234"


def test_keep_failed_rows():
    stage = Execute(timeout=3, workers=2, drop_failed=False, progress=False)
    kept, dropped = stage.apply(rows())
    assert len(kept) == 7 and dropped == []
    by_id = {r["id"]: r for r in kept}
    assert by_id["crash"]["exec"]["returncode"] == 1 and by_id["crash"]["answer"] is None
    assert by_id["good"]["answer"] == "42"
    assert stage.report()["failures"] == {"error": 1, "timeout": 1, "no output": 1}


def test_needs_code_column_and_options():
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="code"):
        Execute(progress=False).apply([{"id": "x", "completion": "print(1)"}])
    with pytest.raises(DistillError, match="positive"):
        build_stages([{"execute": {"timeout": 0}}])
    stage = build_stages([{"execute": {"timeout": 2, "memory_mb": 256, "workers": 3}}])[0]
    assert (stage.timeout, stage.memory_mb, stage.workers, stage.drop_failed) == (2, 256, 3, True)
    assert Execute(progress=False).apply([]) == ([], [])


class Correct(RowStage):
    """A later stage: keeps rows whose answer is the gold one."""

    name = "correct"

    def check(self, row):
        return None if row["answer"] == row["gold"] else "wrong"


def test_pipeline_goes_on(tmp_path):
    """Execute's kept rows feed the next stage; run_filter writes both sides with ``exec``."""
    kept, _ = Execute(timeout=3, workers=2, progress=False).apply(rows())
    kept2, dropped2 = Correct().apply(kept)
    assert [r["id"] for r in kept2] == ["good", "blank-lines", "cot"]
    assert [r["id"] for r in dropped2] == ["text"]

    write_rows(tmp_path / "in", rows(), {"kind": "test"})
    config = tmp_path / "execute.yaml"
    config.write_text("stages:\n  - execute: {timeout: 3, progress: false}\n")
    result = run_filter(tmp_path / "in", tmp_path / "out", config=config)
    assert (result.rows_in, result.kept, result.dropped) == (7, 4, 3)
    summary = result.stages[0]
    assert summary["stage"] == "execute" and summary["reasons"] == {
        "error": 1, "timeout": 1, "no output": 1}
    assert summary["programs"] == 6
    out = {r["id"]: r for r in io.read_rows(tmp_path / "out" / "kept")}
    assert out["good"]["exec"]["stdout"] == "working...\n42\n" and out["good"]["answer"] == "42"
    assert out["cot"]["exec"] is None  # (a column of the table: null where no program ran)
    back = {r["id"]: r for r in io.read_rows(tmp_path / "out" / "dropped")}
    assert back["loop"]["drop_reason"] == "timeout" and back["loop"]["exec"]["timed_out"]
