"""``distill filter`` end to end: kept, dropped (with reasons), report.md/json and funnel.png."""

import json

import datasets
import pytest

from distill import io
from distill.cli import main
from distill.datagen.plan import row_schema
from distill.errors import DistillError
from distill.filters.base import GroupStage, RowStage, Stage
from distill.filters.pipeline import filter_rows, run_filter

SOLUTIONS = {  # source_id -> (gold, completions the teacher wrote)
    "p1": ("14", ["3 notebooks cost 3 * 4 = 12 dollars. With the pen: 12 + 2 = 14.\n#### 14",
                  "3 notebooks cost 3 * 4 = 12 dollars. With the pen: 12 + 2 = 14.\n#### 14",
                  "Each notebook is 4 dollars, so 3 * 4 = 12, and 12 + 2 = 16.\n#### 16"]),
    "p2": ("4", ["24 eggs in cartons of 6 make 24 / 6 = 4 cartons.\nThe answer is 4.",
                 "He fills 24 / 6 = 4 cartons, so the farmer fills four cartons in all.\n#### 4",
                 "Let me think about the eggs and the cartons and the eggs and the"]),
}


@pytest.fixture
def generated(tmp_path):
    """A dataset folder in the exact format ``distill generate`` writes."""
    rows = []
    for sid, (gold, completions) in SOLUTIONS.items():
        for k, text in enumerate(completions):
            rows.append({"id": f"{sid}-{k}", "source_id": sid, "sample_index": k,
                         "question": f"question {sid}", "gold": gold, "template": "gsm8k-cot",
                         "kind": "cot", "task": None, "messages": [{"role": "user",
                                                                     "content": "q"}],
                         "completion": text, "prompt_tokens": 10, "tokens": len(text) // 4,
                         "finish_reason": "length" if text.endswith("the") else "stop",
                         "model": "teacher", "backend": "hf", "sampling": "{}",
                         "source": "{}"})
    folder = tmp_path / "gen"
    io.ShardWriter(folder, row_schema(False)).write(rows)
    io.write_manifest(folder, {"kind": "generate", "prompt": {"kind": "cot"}})
    return folder


def test_filter_writes_kept_dropped_and_a_funnel_report(generated, tmp_path):
    out = tmp_path / "filtered"
    stages = [{"parse": {}}, {"verify": {}}, {"quality": {"drop_truncated": True}},
              {"dedupe": {"method": "exact"}}]
    result = run_filter(generated, out, stages=["parse", "verify", "dedupe"],
                        config=_config(tmp_path, stages))
    kept = datasets.load_dataset("parquet", data_files=str(out / "kept/data/*.parquet"),
                                 split="train")
    dropped = io.read_rows(out / "dropped")
    assert sorted(kept["id"]) == ["p1-0", "p2-0", "p2-1"]
    reasons = {r["id"]: (r["dropped_by"], r["drop_reason"]) for r in dropped}
    assert reasons["p1-2"] == ("verify", "wrong answer")
    assert reasons["p1-1"][0] == "dedupe" and reasons["p2-2"][0] in {"parse", "verify"}
    assert result.rows_in == 6 and result.kept == 3 and result.dropped == 3
    span = kept.filter(lambda r: r["id"] == "p2-0")[0]
    assert span["completion"][span["answer_span"][0]:span["answer_span"][1]] == "4"

    report = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["parse", "verify", "dedupe"]
    assert report["rows_in"] == 6 and report["kept"] == 3
    assert report["drop_reasons"]["verify: wrong answer"] == 1
    assert all(s["seen"] == s["kept"] + s["dropped"] for s in report["stages"])
    md = (out / "report.md").read_text()
    assert "| verify | " in md and "wrong answer" in md and "funnel.png" in md
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = io.read_manifest(out / "kept")
    assert lineage["input_manifest"]["kind"] == "generate" and lineage["rows"] == 3


def _config(tmp_path, stages):
    path = tmp_path / "filters.yaml"
    path.write_text(json.dumps({"stages": stages}))  # JSON is YAML
    return path


def test_cli_filter_runs_a_preset_on_a_generated_dataset(generated, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["filter", "--data", str(generated), "--out", str(out),
                 "--stages", "parse,verify,quality"]) == 0
    printed = capsys.readouterr().out
    assert "6 rows in, 4 kept, 2 dropped" in printed and "verify" in printed
    assert io.read_manifest(out / "kept")["stages"][2]["options"]["drop_truncated"] is True


def test_cli_filter_old_positionals_keep_the_same_rows_with_a_notice(generated, tmp_path, capsys):
    new, old = tmp_path / "new", tmp_path / "old"
    assert main(["filter", "--data", str(generated), "--out", str(new), "--stages",
                 "parse,verify,quality"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["filter", str(generated), str(old), "--stages", "parse,verify,quality"]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line] == [
        "distill: the positional IN_DIR is deprecated and will be removed in 0.3; use --data",
        "distill: the positional OUT_DIR is deprecated and will be removed in 0.3; use --out"]
    for part in ("kept", "dropped"):
        assert io.read_rows(old / part) == io.read_rows(new / part)


@pytest.mark.parametrize("stages, match", [
    (["parse", "sparkle"], "unknown filter stage 'sparkle'"),
    ([{"quality": {"min_charz": 3}}], r"stages\[0\] \(quality\): .*min_charz"),
    ([{"parse": {}, "verify": {}}], r"stages\[0\]: a stage is a name or a one-key mapping"),
    (["parse", {"score": {"backend": "hf", "engine_args": {"max_model_len": 512}}}],
     r"stages\[1\] \(score\): engine_args is for backend: vllm, not hf"),
])
def test_bad_filter_configs_are_named(generated, tmp_path, stages, match):
    with pytest.raises(DistillError, match=match):
        run_filter(generated, tmp_path / "out", config=_config(tmp_path, stages))


def test_a_stage_missing_its_column_names_stage_and_column(tmp_path):
    folder = tmp_path / "plain"
    io.ShardWriter(folder, row_schema(False)).write([])  # empty shard, then a bare table
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "a", "completion": "#### 3"}]),
                   folder / "data" / "part-00000.parquet")
    with pytest.raises(DistillError, match="stage 'parse' needs the column 'kind'"):
        run_filter(folder, tmp_path / "out", stages=["parse"])


def test_question_and_completion_rows_are_filtered_as_they_are(tmp_path):
    """The filter adds only its stages' columns: rows with a question and a completion but no
    messages get no ``messages`` column (the Ray executor, which reads shards as they are,
    writes the same bytes)."""
    import pyarrow as pa

    rows = [{"id": f"r{i}", "question": f"q{i}", "completion": f"so #### {i}"} for i in range(3)]
    folder = tmp_path / "plain"
    io.ShardWriter(folder, pa.Table.from_pylist(rows).schema).write(rows)
    run_filter(folder, tmp_path / "out", stages=["quality"])
    dropped = io.read_rows(tmp_path / "out" / "dropped")  # too short for the quality stage
    assert [{k: r[k] for k in ("id", "question", "completion")} for r in dropped] == rows
    assert set(dropped[0]) == {"id", "question", "completion", "quality", "dropped_by",
                               "drop_reason"}


def test_rows_with_columns_only_some_stages_add_are_all_written(tmp_path):
    from distill.filters.pipeline import write_rows

    write_rows(tmp_path / "mixed", [{"id": "cot", "code": None},
                                    {"id": "pot", "code": "print(1)", "exec": {"returncode": 0}}],
               {"kind": "test"})
    rows = io.read_rows(tmp_path / "mixed")
    assert rows[0]["exec"] is None and rows[1]["exec"] == {"returncode": 0}


def test_a_preset_name_is_the_preset_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    from distill.filters.pipeline import load_filter_config

    (tmp_path / "cot").mkdir()  # e.g. `distill generate --out cot` run here before
    monkeypatch.chdir(tmp_path)
    assert load_filter_config("cot")[0] == {"parse": {"drop_missing": True}}


@pytest.mark.parametrize("preset", ["cot", "pot", "instruction", "rejection-sampling",
                                    "problem", "consensus"])
def test_every_shipped_preset_builds(preset):
    from distill.filters.pipeline import load_filter_config
    from distill.filters.stages import build_stages

    stages = build_stages(load_filter_config(preset), preset)
    assert stages and all(s.name for s in stages)


class Short(RowStage):
    """A stage no registry knows: keeps completions of at most ``limit`` characters."""

    name = "short"
    needs = ("completion",)
    adds = ("length",)

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def check(self, row):
        row["length"] = len(row["completion"])
        return None if row["length"] <= self.limit else "too long"


class FirstOfProblem(GroupStage):
    """Another: keeps the first row of each problem (rows of one ``source_id``)."""

    name = "first_of_problem"
    needs = ("source_id",)
    adds = ("samples",)

    def group_key(self, row):
        return row["source_id"]

    def check_group(self, rows):
        for row in rows:
            row["samples"] = len(rows)
        return [None] + ["not the first"] * (len(rows) - 1)


def test_stages_run_here_from_their_declaration_alone():
    texts = {"a-0": "#### 1", "b-0": "a long way round to #### 2", "a-1": "#### 3", "b-1": "#### 2",
             "b-2": "#### 2"}
    rows = [{"id": i, "source_id": i[0], "completion": t} for i, t in texts.items()]
    short, first = Short(10), FirstOfProblem()
    assert (short.scope, first.scope) == ("row", "group")
    run = filter_rows(rows, [short, first])
    assert [(r["id"], r["length"], r["samples"]) for r in run.kept] == [("a-0", 6, 2),
                                                                        ("b-1", 6, 2)]
    assert [(r["id"], r["dropped_by"], r["drop_reason"]) for r in run.dropped] == [
        ("b-0", "short", "too long"), ("a-1", "first_of_problem", "not the first"),
        ("b-2", "first_of_problem", "not the first")]
    assert (first.stats.seen, first.stats.kept) == (4, 2)
    with pytest.raises(TypeError, match="scope is one of row, group, dataset"):
        type("Odd", (Stage,), {"scope": "shard"})
