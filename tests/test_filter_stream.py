"""The filter streams its rows: the same kept and dropped bytes as one pass over all rows in
memory, outputs that ``datasets`` reads even when empty, and memory that does not grow with the
number of rows."""

import importlib.util
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import io
from distill.filters import pipeline
from distill.filters.pipeline import filter_rows, run_filter, write_rows
from distill.filters.stages import build_stages

REPO = Path(__file__).resolve().parents[1]
MIXED = [{"parse": {}}, {"verify": {"drop_incorrect": False}}, {"quality": {}},
         {"dedupe": {"method": "exact"}}, {"dedupe": {"method": "minhash", "keep": "tokens"}},
         {"pass_rate": {"lo": 0.5, "hi": 1.0}}, {"vote": {"min_votes": 1, "min_share": 0.2}},
         {"agreement": {}}, "verify"]


def bench():
    """``bench/memory.py`` as a module (its synthetic rows and its measurements)."""
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "bench" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(tmp_path, stages) -> Path:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps({"stages": stages}))
    return path


def in_memory_write(folder: Path, rows: list[dict], shard_rows: int) -> None:
    """How the filter wrote its output when it held every row: one table, sliced into shards."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in columns})
    (folder / "data").mkdir(parents=True)
    for i in range(0, len(rows), shard_rows):
        pq.write_table(table.slice(i, shard_rows), folder / "data" / f"part-{i // shard_rows:05d}"
                       ".parquet")


def test_streaming_writes_the_bytes_of_one_pass_in_memory(tmp_path, monkeypatch):
    memory = bench()
    monkeypatch.setattr(memory, "SHARD_ROWS", 150)
    data = memory.write_dataset(tmp_path / "data", 600)  # 4 input shards
    for name, value in (("BATCH_ROWS", 37), ("BUCKET_ROWS", 20), ("SHARD_ROWS", 100),
                        ("TABLE_ROWS", 30)):
        monkeypatch.setattr(pipeline, name, value)
    result = run_filter(data, tmp_path / "streamed", config=config(tmp_path, MIXED))

    stages = build_stages(MIXED)
    run = filter_rows(io.read_rows(data), stages)
    for part, rows in (("kept", run.kept), ("dropped", run.dropped)):
        in_memory_write(tmp_path / "memory" / part, rows, 100)
        ours = io.shard_paths(tmp_path / "streamed" / part)
        theirs = io.shard_paths(tmp_path / "memory" / part)
        assert [p.name for p in ours] == [p.name for p in theirs]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs)), part
    assert (result.rows_in, result.kept) == (600, len(run.kept)) and 0 < result.kept < 600
    assert len(io.shard_paths(tmp_path / "streamed" / "kept")) > 3
    assert {r["dropped_by"] for r in run.dropped} >= {"quality", "dedupe", "vote"}
    report = json.loads((tmp_path / "streamed" / "report.json").read_text())
    assert [{k: v for k, v in s.items() if k not in ("stage", "options", "seconds")}
            for s in report["stages"]] == [{**s.stats.to_dict(), **s.report()} for s in stages]


def empty_set(folder: Path) -> list[str]:
    """The columns of an empty output folder, checked as each reader sees it: one shard of no
    row group (``datasets`` refuses a row group of 0 rows: "BatchSize must be greater than 0"),
    0 rows for pyarrow and distill, and for ``datasets``' builder a train split of 0 examples
    with the same columns. (``load_dataset`` itself, in datasets 5.2, still raises "corresponds
    to no data" on any 0-row split, whatever the file; open PR huggingface/datasets#8401.)"""
    shards = io.shard_paths(folder)
    assert len(shards) == 1 and pq.ParquetFile(shards[0]).metadata.num_row_groups == 0
    table = pq.read_table(shards[0])
    assert table.num_rows == 0 and io.read_rows(folder) == []
    builder = datasets.load_dataset_builder(str(folder))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 0
    assert list(builder.info.features) == table.column_names
    return table.column_names


def test_a_filter_that_keeps_nothing_writes_empty_sets_with_the_full_schema(tmp_path):
    data = bench().write_dataset(tmp_path / "data", 20)
    input_columns = pq.read_schema(io.shard_paths(data)[0]).names
    out = tmp_path / "none-kept"
    result = run_filter(data, out, config=config(tmp_path, ["parse", {"quality": {
        "min_chars": 100_000}}]))
    assert (result.kept, result.dropped) == (0, 20)
    assert empty_set(out / "kept") == input_columns + [
        "answer", "answer_raw", "answer_span", "answer_format", "reasoning", "code", "quality"]

    one = bench().write_dataset(tmp_path / "one", 1)
    out = tmp_path / "none-dropped"
    run_filter(one, out, config=config(tmp_path, [
        "parse", {"verify": {"drop_incorrect": False}}, {"dedupe": {"method": "exact"}}]))
    assert empty_set(out / "dropped") == input_columns + [
        "answer", "answer_raw", "answer_span", "answer_format", "reasoning", "code", "correct",
        "duplicate_of", "dropped_by", "drop_reason"]
    assert datasets.load_dataset(str(out / "kept"), split="train").num_rows == 1


@pytest.mark.parametrize("rows, shards", [(0, 1), (1, 1), (25, 3)])
def test_written_folders_load_with_datasets_and_with_distill(tmp_path, monkeypatch, rows, shards):
    monkeypatch.setattr(pipeline, "SHARD_ROWS", 10)
    written = [{"id": f"r{i}", "score": i / 2 if i % 3 else None,
                "exec": {"returncode": i} if i % 2 else None} for i in range(rows)]
    schema = pa.schema([("id", pa.string()), ("score", pa.float64()), ("exec", pa.null())])
    write_rows(tmp_path / "out", written, {"kind": "test"}, schema)
    assert len(io.shard_paths(tmp_path / "out")) == shards
    if not rows:
        assert empty_set(tmp_path / "out") == ["id", "score", "exec"]
        return
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert loaded.num_rows == rows and loaded.column_names == ["id", "score", "exec"]
    back = io.read_rows(tmp_path / "out")
    assert [r["id"] for r in back] == [r["id"] for r in loaded] == [r["id"] for r in written]
    assert [r["exec"] for r in back] == [r["exec"] for r in written]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data", "manifest.json"]


@pytest.mark.slow
def test_filter_memory_grows_little_with_the_rows():
    """The memory bench at 2,000 and 20,000 rows. Holding every row (about 9 KB each) grew
    peak RSS 1.67x (238 to 398 MiB); streaming holds a batch of 2,000 rows and one output
    shard of 10,000, full only from 10,000 rows on (1.31x: 219 to 287 MiB), and no more
    after (see docs/benchmarks.md)."""
    runs = bench().measure([2_000, 20_000], ["filter"])["filter"]
    assert runs[1][1] / runs[0][1] < 1.45, runs


@pytest.mark.parametrize("rows, shards", [(0, 1), (1, 1), (25, 3)])
def test_generated_folders_load_with_datasets_and_with_distill(tmp_path, monkeypatch, rows,
                                                               shards):
    from distill.datagen.plan import row_schema

    memory = bench()
    monkeypatch.setattr(memory, "SHARD_ROWS", 10)
    folder = memory.write_dataset(tmp_path / "gen", rows)
    if not rows:  # an empty shard of the generate schema
        io.ShardWriter(folder, row_schema(False)).write([])
    assert len(io.shard_paths(folder)) == shards
    if not rows:
        assert empty_set(folder) == row_schema(False).names
        return
    loaded = datasets.load_dataset(str(folder), split="train")
    assert loaded.num_rows == rows and loaded.column_names == row_schema(False).names
    assert [r["id"] for r in io.read_rows(folder)] == loaded["id"] == [f"r{i}" for i in
                                                                       range(rows)]
