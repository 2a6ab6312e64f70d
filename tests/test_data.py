import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.data import load_source
from distill.errors import DistillError

ROWS = [{"problem": f"What is {i} + {i}?", "solution": str(2 * i)} for i in range(5)]


def write(tmp_path, kind):
    if kind == "jsonl":
        p = tmp_path / "s.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":
        p = tmp_path / "s.json"
        p.write_text(json.dumps(ROWS))
    elif kind == "csv":
        p = tmp_path / "s.csv"
        p.write_text("problem,solution\n" + "".join(f'"{r["problem"]}",{r["solution"]}\n'
                                                   for r in ROWS))
    elif kind == "parquet":
        p = tmp_path / "s.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), p)
    elif kind == "save_to_disk":
        import datasets

        p = tmp_path / "saved"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(p))
    elif kind == "parquet_folder":
        p = tmp_path / "shards"
        (p / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(ROWS[:2]), p / "data" / "part-00000.parquet")
        pq.write_table(pa.Table.from_pylist(ROWS[2:]), p / "data" / "part-00001.parquet")
    return str(p)


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "save_to_disk",
                                  "parquet_folder"])
def test_every_source_format_reads_the_same_rows_with_field_mapping(tmp_path, kind):
    rows = load_source(write(tmp_path, kind), fields={"question": "problem", "gold": "solution"})
    assert [r.fields["question"] for r in rows] == [r["problem"] for r in ROWS]
    assert [str(r.fields["gold"]) for r in rows] == [r["solution"] for r in ROWS]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "parquet_folder"])
def test_a_folder_name_with_glob_characters_is_read_as_it_is(tmp_path, kind):
    """A sweep variant's folder (``variants/rounds=[{}, {...}]``) holds "[" and "{"."""
    folder = tmp_path / 'rounds=[{}, {"generate": {"shots": 0}}]'
    folder.mkdir()
    rows = load_source(write(folder, kind), fields={"question": "problem"})
    assert [r.fields["question"] for r in rows] == [r["problem"] for r in ROWS]


def test_txt_source_is_one_topic_per_line_skipping_comments(tmp_path):
    p = tmp_path / "topics.txt"
    p.write_text("# topics\nphotosynthesis\n\ncompound interest\n")
    rows = load_source(str(p))
    assert [r.fields["topic"] for r in rows] == ["photosynthesis", "compound interest"]
    assert rows[1].where.endswith("topics.txt:4")


def test_limit_and_seeded_shuffle(tmp_path):
    path = write(tmp_path, "jsonl")
    assert len(load_source(path, limit=2)) == 2
    a = [r.fields["problem"] for r in load_source(path, shuffle=True, seed=1)]
    b = [r.fields["problem"] for r in load_source(path, shuffle=True, seed=1)]
    assert a == b and sorted(a) == sorted(r["problem"] for r in ROWS) and a != [r["problem"]
                                                                              for r in ROWS]


def test_mapping_to_a_missing_field_names_the_field_and_row(tmp_path):
    with pytest.raises(DistillError, match=r"s\.jsonl:1: --field question=prob: the data has "
                                           r"no column 'prob'; it has: problem, solution"):
        load_source(write(tmp_path, "jsonl"), fields={"question": "prob"})


def test_bad_jsonl_line_is_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "ok"}\n{"question": oops}\n')
    with pytest.raises(DistillError, match=r"bad\.jsonl:2: not valid JSON"):
        load_source(str(p))


@pytest.mark.parametrize("name, content, match", [
    ("empty.jsonl", "\n", "the source is empty"),
    ("data.xml", "<a/>", "unsupported file type '.xml'"),
    ("broken.parquet", "not parquet", "unreadable Parquet file"),
])
def test_unusable_sources_get_one_clear_error(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DistillError, match=match):
        load_source(str(p))


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DistillError, match="no such file or folder"):
        load_source(str(tmp_path / "nope.jsonl"))
