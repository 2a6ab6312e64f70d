"""``distill publish``: a generated + filtered dataset becomes a hub-ready folder that
``datasets.load_dataset`` reads back, with a card that carries the lineage and the funnel."""

import json

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from distilled import build

from distill import io
from distill.cli import main
from distill.errors import DistillError
from distill.publish.formats import to_format
from distill.publish.publish import publish
from distill.publish.splits import assign_splits

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(generate output, filter output), built once for the module."""
    return build(tmp_path_factory.mktemp("distilled"))


def load(folder, tmp_path):
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_published_folder_loads_back_with_splits_by_problem(distilled, tmp_path):
    _, filtered = distilled
    result = publish(filtered, tmp_path / "pub", test_size=0.25)
    kept = {r["id"]: r for r in io.read_rows(filtered / "kept")}
    ds = load(tmp_path / "pub", tmp_path)

    assert set(ds) == {"train", "test"} and result.splits == {"train": ds["train"].num_rows,
                                                               "test": ds["test"].num_rows}
    assert sorted(list(ds["train"]["id"]) + list(ds["test"]["id"])) == sorted(kept)
    train, test = set(ds["train"]["source_id"]), set(ds["test"]["source_id"])
    assert len(test) == 2 and not train & test  # 25% of 8 problems, never in both splits
    assert ds["train"].features["messages"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")})
    row = ds["test"][0]
    assert row["messages"][:-1] == kept[row["id"]]["messages"]
    assert row["messages"][-1] == {"role": "assistant", "content": kept[row["id"]]["completion"]}
    assert row["gold"] == kept[row["id"]]["gold"] and row["correct"] is True
    assert "source" not in ds["train"].column_names and "sampling" not in ds["train"].column_names
    # the same seed picks the same problems; the split does not depend on the row order
    again = assign_splits(list(kept.values())[::-1], test_size=0.25)
    assert {r["source_id"] for r, s in zip(list(kept.values())[::-1], again) if s == "test"} == test


def test_card_carries_lineage_funnel_lengths_and_samples(distilled, tmp_path):
    gen, filtered = distilled
    out = tmp_path / "pub"
    publish(filtered, out, test_size=0.25, license="apache-2.0", language=["en"])
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"] and "text-generation" in meta["task_categories"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"}]}]

    made = io.read_manifest(gen)
    for fact in ("`scripted-teacher`", "`gsm8k-cot`", made["prompt"]["sha256"][:12],
                 "temperature=0.8", "n=3", str(gen.parent / "problems.jsonl"),
                 "`quality` (drop_truncated=True, min_chars=20)", "`dedupe` (method=exact)",
                 "| datasets |", datasets.__version__):
        assert fact in card, fact
    report = json.loads((filtered / "report.json").read_text())
    assert f"{report['rows_in']} generated rows in, **{report['kept']} kept**" in card
    for s in report["stages"]:
        assert f"| {s['stage']} | {s['seen']} | {s['kept']} | {s['dropped']} |" in card
    assert "wrong answer (3)" in card and "![filter funnel](funnel.png)" in card
    assert (out / "funnel.png").read_bytes() == (filtered / "funnel.png").read_bytes()
    assert "![length histograms](lengths.png)" in card
    assert (out / "lengths.png").read_bytes()[:8] == PNG
    assert "## Samples" in card and "#### " in card and "## Known limitations" in card
    assert "Not decontaminated" in card and "checked against gold answers" in card
    assert f"load_dataset({str(out)!r})" in card

    lineage = io.read_manifest(out)
    assert lineage["kind"] == "publish" and lineage["splits"] == {
        "train": report["kept"] - lineage["splits"]["test"], "test": lineage["splits"]["test"]}
    assert lineage["input_manifest"]["kind"] == "filter"
    assert lineage["input_manifest"]["input_manifest"]["model"] == "scripted-teacher"


def test_backticks_and_markup_in_completions_do_not_break_the_card(distilled, tmp_path):
    _, filtered = distilled
    publish(filtered, tmp_path / "pub", samples=8)
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "````\nSam starts with 5 marbles" in card  # a fence longer than the text's ```


def test_split_by_a_source_column(distilled, tmp_path):
    _, filtered = distilled
    publish(filtered, tmp_path / "pub", split_column="split")
    ds = load(tmp_path / "pub", tmp_path)
    assert set(ds["test"]["source_id"]) == {"p2", "p5"}
    assert not set(ds["train"]["source_id"]) & {"p2", "p5"}
    assert "split by the column `split`" in (tmp_path / "pub" / "README.md").read_text()


@pytest.mark.parametrize("fmt, columns", [
    ("messages", ["messages"]),
    ("prompt-completion", ["prompt", "completion"]),
    ("alpaca", ["instruction", "input", "output", "system", "history"]),
    ("sharegpt", ["conversations"]),
])
def test_each_export_format_loads_back(distilled, tmp_path, fmt, columns):
    _, filtered = distilled
    publish(filtered, tmp_path / "pub", format=fmt, metadata=False, test_size=2)
    ds = load(tmp_path / "pub", tmp_path)
    assert ds["train"].column_names == columns and ds["test"].column_names == columns
    kept = io.read_rows(filtered / "kept")
    by_completion = {r["completion"]: r for r in kept}
    row = ds["train"][0]
    system, user = (m["content"] for m in kept[0]["messages"])
    if fmt == "messages":
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][-1]["content"] in by_completion
    elif fmt == "prompt-completion":
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["completion"][0]["role"] == "assistant"
        assert row["completion"][0]["content"] in by_completion
    elif fmt == "alpaca":
        src = by_completion[row["output"]]
        assert row["instruction"] == src["messages"][-1]["content"] and "Problem:" in user
        assert row["input"] == "" and row["system"] == system and row["history"] == []
    else:
        assert [t["from"] for t in row["conversations"]] == ["system", "human", "gpt"]
        assert row["conversations"][-1]["value"] in by_completion
        assert row["conversations"][0]["value"] == system


def test_few_shot_turns_become_alpaca_history_and_sharegpt_turns():
    row = {"id": "a", "completion": "#### 4", "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "#### 2"}, {"role": "user", "content": "2+2?"}]}
    alpaca = to_format(row, "alpaca")
    assert alpaca == {"instruction": "2+2?", "input": "", "output": "#### 4", "system": "S",
                      "history": [["1+1?", "#### 2"]]}
    assert [t["from"] for t in to_format(row, "sharegpt")["conversations"]] == \
        ["system", "human", "gpt", "human", "gpt"]
    with pytest.raises(DistillError, match="unknown format 'jsonl'"):
        to_format(row, "jsonl")


def test_a_plain_generated_folder_publishes_without_a_funnel(distilled, tmp_path):
    gen, filtered = distilled
    out = tmp_path / "pub"
    publish(filtered, out)
    assert (out / "funnel.png").exists()  # an earlier publish of a filtered dataset
    publish(gen, out)
    card = (out / "README.md").read_text()
    assert "This dataset was not filtered" in card and "No stage checked correctness" in card
    assert "no held-out split" in card and not (out / "funnel.png").exists()
    assert "stopped at the token limit" in card  # the truncated rows are still there
    assert load(out, tmp_path)["train"].num_rows == 24


def test_republishing_replaces_the_old_splits(distilled, tmp_path):
    _, filtered = distilled
    out = tmp_path / "pub"
    publish(filtered, out, test_size=0.25)
    publish(filtered, out)
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    assert not (out / ".tmp").exists()
    assert set(load(out, tmp_path)) == {"train"}


@pytest.mark.parametrize("kw, match", [
    ({"test_size": 1.5}, "fraction in"),
    ({"test_size": -0.1}, "fraction in"),
    ({"test_size": 0.2, "split_column": "split"}, "exclude each other"),
    ({"split_column": "nope"}, "no 'nope' column or source field"),
])
def test_bad_split_options_are_named(distilled, tmp_path, kw, match):
    _, filtered = distilled
    with pytest.raises(DistillError, match=match):
        publish(filtered, tmp_path / "pub", **kw)


def test_a_problem_split_needs_two_problems_and_never_overwrites_the_input(distilled, tmp_path):
    _, filtered = distilled
    rows = [r for r in io.read_rows(filtered / "kept") if r["source_id"] == "p0"]
    with pytest.raises(DistillError, match="at least 2"):
        assign_splits(rows, test_size=0.5)
    with pytest.raises(DistillError, match="would overwrite the input"):
        publish(filtered, filtered / "kept")
    with pytest.raises(DistillError, match="no dataset here"):
        publish(tmp_path, tmp_path / "pub")


@pytest.fixture
def no_hub_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))


def _complete(out, tmp_path):
    assert (out / "README.md").exists() and (out / "lengths.png").exists()
    assert (out / "manifest.json").exists() and not (out / ".tmp").exists()
    assert set(load(out, tmp_path)) == {"train", "test"}


def test_to_hub_without_a_token_is_one_clear_error_and_the_folder_is_complete(
        distilled, tmp_path, no_hub_token, capsys):
    _, filtered = distilled
    out = tmp_path / "pub"
    code = main(["publish", "--data", str(filtered), "--out", str(out), "--test-size", "0.25",
                 "--to-hub", "someone/marbles"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no Hugging Face token" in err and f"the dataset is complete in {out}" in err
    assert "hf upload someone/marbles" in err
    _complete(out, tmp_path)
    assert "load_dataset('someone/marbles')" in (out / "README.md").read_text()


def test_to_hub_without_network_is_one_clear_error(distilled, tmp_path, monkeypatch):
    from huggingface_hub import constants

    _, filtered = distilled
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DistillError, match=r"push failed \(.*\); the dataset is complete in"):
        publish(filtered, tmp_path / "pub", test_size=0.25, to_hub="someone/marbles",
                token="hf_not_a_real_token")
    _complete(tmp_path / "pub", tmp_path)


def test_cli_publish_prints_the_splits(distilled, tmp_path, capsys):
    _, filtered = distilled
    out = tmp_path / "pub"
    assert main(["publish", "--data", str(filtered), "--out", str(out), "--test-size", "2",
                 "--format", "sharegpt", "--license", "mit", "--language", "en,fr"]) == 0
    printed = capsys.readouterr().out
    assert "(train " in printed and "test " in printed and "format sharegpt" in printed
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "mit" and meta["language"] == ["en", "fr"]
    assert len({r["source_id"] for r in pq.read_table(out / "data" /
                                                      "test-00000-of-00001.parquet").to_pylist()}) == 2
