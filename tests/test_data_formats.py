"""Any dataset in: what distill writes (generate, filter, publish in each format) and the
copies users make of it (a Parquet file, a jsonl export, a save_to_disk folder, a glob) read
back through ``distill.data`` in filter, show, publish and train, with the same rows and the
same training tokens; column mapping, unreadable files and an offline hub id get one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distilled import STAGES, build

from distill.cli import main
from distill.data import conversations, read
from distill.errors import DistillError
from distill.filters.pipeline import run_filter
from distill.publish.formats import FORMATS
from distill.publish.publish import publish
from distill.publish.show import summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(generate output, filter output), built once for the module."""
    return build(tmp_path_factory.mktemp("distilled"))


def copies(folder: Path, tmp: Path) -> dict[str, str]:
    """The copies of a dataset a user makes: its Parquet file, a jsonl export, a save_to_disk
    folder, a glob over jsonl shards."""
    ds = read(folder).dataset
    tmp.mkdir(parents=True, exist_ok=True)
    ds.to_json(str(tmp / "export.jsonl"))
    ds.save_to_disk(str(tmp / "saved"))
    (tmp / "shards").mkdir()
    ds.select(range(len(ds) // 2)).to_json(str(tmp / "shards" / "a.jsonl"))
    ds.select(range(len(ds) // 2, len(ds))).to_json(str(tmp / "shards" / "b.jsonl"))
    return {"jsonl": str(tmp / "export.jsonl"), "save_to_disk": str(tmp / "saved"),
            "folder of jsonl": str(tmp / "shards"), "glob": str(tmp / "shards" / "*.jsonl")}


def token_counts(data, tokenizer) -> tuple[int, int, int]:
    """(rows, prompt tokens, completion tokens) of ``distill train``'s data preparation."""
    from distill.sft.config import build_config
    from distill.sft.data import build_examples, load_rows

    rows, _, _ = load_rows(data)
    _, report = build_examples(rows, tokenizer, build_config(output_dir="unused"),
                               verbose=False)
    t = report.tokens
    return report.examples, t["prompt"], t["reasoning"] + t["answer"]


def test_published_data_in_every_format_and_copy_trains_with_the_same_tokens(
        distilled, tiny_model, tmp_path, capsys):
    from transformers import AutoTokenizer

    _, filtered = distilled
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = token_counts(filtered, tokenizer)
    assert expected[0] > 0
    for fmt in FORMATS:
        hub = tmp_path / f"hub-{fmt}"
        publish(filtered, hub, format=fmt)
        forms = {"published folder": str(hub),
                 "its Parquet file": str(hub / "data" / "train-00000-of-00001.parquet"),
                 **copies(hub, tmp_path / f"copies-{fmt}")}
        for form, path in forms.items():
            assert token_counts(path, tokenizer) == expected, (fmt, form)
    # the command: distill train sft --data <published folder> trains
    out = tmp_path / "student"
    assert main(["train", "sft", "--student", tiny_model, "--data", str(tmp_path / "hub-alpaca"),
                 "--out", str(out), "--max_steps", "1", "--per_device_train_batch_size", "4",
                 "--report_to", "none", "--disable_tqdm", "true", "--max_length", "256",
                 "--gradient_checkpointing", "false"]) == 0, capsys.readouterr().err
    assert (out / "README.md").exists()
    assert f"{expected[0]} rows -> {expected[0]} training sequences" in capsys.readouterr().err


def test_filter_show_and_publish_read_every_input_kind(distilled, tmp_path):
    gen, filtered = distilled
    config = tmp_path / "filters.yaml"
    config.write_text(json.dumps({"stages": STAGES}))
    kept = {r["id"] for r in read(filtered).dataset}
    gen_rows = len(read(gen).dataset)
    parquet = tmp_path / "gen.parquet"
    read(gen).dataset.to_parquet(str(parquet))
    inputs = {"dataset folder": str(gen), "Parquet file": str(parquet),
              **copies(gen, tmp_path / "copies")}
    for n, (kind, path) in enumerate(inputs.items()):
        result = run_filter(path, tmp_path / f"out{n}", config=config)
        assert {r["id"] for r in read(tmp_path / f"out{n}").dataset} == kept, kind
        assert result.rows_in == gen_rows, kind
        assert f"{gen_rows} rows" in summary(path), kind
        pub = publish(path, tmp_path / f"pub{n}")
        assert pub.splits == {"train": gen_rows}, kind
    # a published folder is filter input too (its messages are split back into the row)
    publish(filtered, tmp_path / "hub", test_size=0.25)
    result = run_filter(tmp_path / "hub", tmp_path / "refiltered", config=config)
    assert result.rows_in == len(read(tmp_path / "hub").dataset) and result.kept > 0
    assert "published dataset" in summary(tmp_path / "hub", options={"split": "test"})


def test_published_splits_are_picked_with_split(distilled, tmp_path):
    _, filtered = distilled
    publish(filtered, tmp_path / "hub", test_size=0.25)
    train, test = (len(read(tmp_path / "hub", split=s).dataset) for s in ("train", "test"))
    assert train > 0 and test > 0 and train + test == len(read(filtered).dataset)
    with pytest.raises(DistillError, match=r"no split 'dev'; it has: train, test .*--split"):
        read(tmp_path / "hub", split="dev")


@pytest.mark.parametrize("rows, fmt", [
    ([{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}],
     "messages"),
    ([{"prompt": [{"role": "user", "content": "2+2?"}],
       "completion": [{"role": "assistant", "content": "4"}]}], "prompt-completion"),
    ([{"prompt": "2+2?", "completion": "4"}], "plain prompt-completion"),
    ([{"instruction": "2+2?", "input": "", "output": "4"}], "alpaca"),
    ([{"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}],
     "sharegpt"),
])
def test_conversational_formats_map_to_the_row(tmp_path, rows, fmt):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({**r, "id": "x"}) + "\n" for r in rows))
    row = conversations(read(path)).dataset[0]
    assert row["messages"] == [{"role": "user", "content": "2+2?"}], fmt
    assert row["completion"] == "4" and row["id"] == "x", fmt


def test_field_maps_a_column_everywhere(tmp_path, tiny_model, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"problem": f"{i}+{i}?", "response": f"It is {2 * i}."})
                            + "\n" for i in range(4)))
    data = conversations(read(path, fields={"question": "problem", "completion": "response"}))
    assert data.dataset[1]["messages"] == [{"role": "user", "content": "1+1?"}]
    assert data.dataset[1]["completion"] == "It is 2."
    assert main(["show", "--data", str(path), "--field", "question=problem",
                 "--field", "completion=response"]) == 0
    assert "completion: It is 0." in capsys.readouterr().out


def test_unmappable_data_names_its_columns_and_the_flag(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "response": "2"}) + "\n")
    for argv in (["train", "sft", "--data", str(path), "--out", str(tmp_path / "o")],
                 ["publish", "--data", str(path), "--out", str(tmp_path / "p")],
                 ["logits", "capture", "--teacher", "t", "--data", str(path), "--out",
                  str(tmp_path / "l"), "--top-k", "2"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "columns found: problem, response" in err[0], argv
        assert "--field completion=" in err[0], argv
    assert main(["filter", "--data", str(path), "--out", str(tmp_path / "f"),
                 "--field", "completion=answer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: {path}:1: --field completion=answer: the data has no column "
                    "'answer'; it has: problem, response")]


def test_a_filter_that_keeps_nothing_is_refused_by_publish_and_train(distilled, tiny_model,
                                                                    tmp_path, capsys):
    """Nothing kept: the empty set still reads (0 rows, full schema), and publish and train
    stop on it with one line, writing nothing."""
    config = tmp_path / "none.yaml"
    config.write_text(json.dumps({"stages": [{"quality": {"min_chars": 10**6}}]}))
    empty = tmp_path / "empty"
    assert main(["filter", "--data", str(distilled[0]), "--out", str(empty), "--config",
                 str(config)]) == 0
    kept = read(str(empty))
    assert len(kept.dataset) == 0 and {"messages", "completion"} <= set(kept.dataset.column_names)
    capsys.readouterr()
    for argv, out in ((["publish", "--data", str(empty)], tmp_path / "pub"),
                      (["train", "sft", "--student", tiny_model, "--data", str(empty)],
                       tmp_path / "student")):
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no rows" in err[0], err
        assert not out.exists()


def test_unreadable_files_get_one_line_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "broken"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"id": "a", "completion": "x"}]),
                   folder / "data" / "part-00000.parquet")
    (folder / "data" / "part-00001.parquet").write_bytes(b"PAR1 not really parquet")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "ok"}\n{"question": "caf\xe9"}\n')
    for data, expected in ((folder, "part-00001.parquet: unreadable Parquet file"),
                           (latin, "latin.jsonl:2: not UTF-8 text")):
        assert main(["filter", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_an_offline_hub_id_says_to_pass_a_local_path(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-m", "distill.cli", "show", "--data",
                           "nobody/no-such-dataset", "--split", "train"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "the hub could not be reached" in err[0], err
    assert "pass a local path" in err[0]



def test_the_data_flags_mean_the_same_in_every_command():
    from distill.cli import build_parser
    from distill.data import options_of
    from distill.flags import take_positionals
    from distill.sft.config import DistillSFTConfig, parse_train_args

    flags = ["--split", "test", "--subset", "main", "--revision", "v1", "--field", "question=q",
             "--field", "completion=a"]
    expected = {"split": "test", "subset": "main", "revision": "v1",
                "fields": {"question": "q", "completion": "a"}}
    for argv in (["generate", "--prompt", "gsm8k-cot", "--data", "d", "--out", "o"],
                 ["filter", "--data", "d", "--out", "o"], ["publish", "--data", "d", "--out", "o"],
                 ["show", "--data", "d"],
                 ["logits", "capture", "--teacher", "t", "--data", "d", "--out", "o",
                  "--top-k", "2"]):
        args = build_parser().parse_args(argv + flags)
        take_positionals(args)
        assert options_of(args) == expected, argv[0]
    inputs, _ = parse_train_args(DistillSFTConfig, ["--data", "d", "--out", "o", *flags])
    assert options_of(inputs) == expected
