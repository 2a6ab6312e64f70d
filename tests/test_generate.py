import json

import datasets
import pytest

from distill import io
from distill.datagen import generate
from distill.datagen.backends.hf import HFBackend
from distill.errors import DistillError


@pytest.fixture(scope="module")
def hf(tiny_model):
    return HFBackend(tiny_model, batch_size=4)


def run(hf, problems, out, **kw):
    args = {"model": "tiny", "backend": hf, "temperature": 0, "max_tokens": 12, "progress": False}
    return generate("gsm8k-cot", str(problems), str(out), **{**args, **kw})


def load(out):
    return datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"),
                                 split="train")


def test_hf_backend_writes_a_dataset_with_provenance(hf, problems, tmp_path):
    out = tmp_path / "out"
    result = run(hf, problems, out, n=2)
    ds = load(out)
    assert result.rows_written == len(ds) == 12 and len(set(ds["id"])) == 12
    assert sorted(set(ds["sample_index"])) == [0, 1]
    row = ds.filter(lambda r: r["source_id"] == "p3")[0]
    assert row["question"] == "Tom has 3 apples and buys 5 more. How many?" and row["gold"] == "8"
    assert row["messages"][-1]["role"] == "user" and "Tom has 3 apples" in row["messages"][-1]["content"]
    assert row["template"] == "gsm8k-cot" and row["kind"] == "cot" and row["backend"] == "hf"
    assert 0 < row["tokens"] <= 12 and row["prompt_tokens"] > 0
    assert row["finish_reason"] in {"stop", "length"}
    assert json.loads(row["sampling"])["max_tokens"] == 12
    manifest = io.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["rows"] == 12
    assert manifest["prompt"]["name"] == "gsm8k-cot" and len(manifest["prompt"]["sha256"]) == 64
    assert manifest["sampling"]["temperature"] == 0 and "torch" in manifest["versions"]
    assert manifest["backend"] == "hf" and manifest["source"]["path"] == str(problems)


def test_greedy_batched_output_equals_one_prompt_at_a_time(hf, tiny_model, problems, tmp_path):
    run(hf, problems, tmp_path / "a")
    run(HFBackend(tiny_model, batch_size=1), problems, tmp_path / "b")
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert dict(zip(a["id"], a["completion"])) == dict(zip(b["id"], b["completion"]))


def test_rerun_reuses_rows_and_more_samples_only_adds_the_new_ones(hf, problems, tmp_path):
    out = tmp_path / "out"
    first = run(hf, problems, out, limit=3)
    before = {r["id"]: r["completion"] for r in io.read_rows(out)}
    again = run(hf, problems, out, limit=3)
    assert (first.rows_written, again.rows_written, again.rows_reused) == (3, 0, 3)
    more = run(hf, problems, out, n=2)  # all 6 problems, 2 samples each
    assert (more.rows_reused, more.rows_written) == (3, 9)
    rows = {r["id"]: r["completion"] for r in io.read_rows(out)}
    assert len(rows) == 12 and all(rows[k] == v for k, v in before.items())


def test_rerun_with_other_sampling_refuses_then_regenerates(hf, problems, tmp_path, capsys):
    out = tmp_path / "out"
    run(hf, problems, out, limit=2)
    with pytest.raises(DistillError, match=r"temperature: 0 then, 0\.9 now.*--regenerate"):
        run(hf, problems, out, limit=2, temperature=0.9)
    assert len(io.read_rows(out)) == 2  # nothing lost
    result = run(hf, problems, out, limit=2, temperature=0.9, regenerate=True)
    assert result.rows_written == 2 and len(io.read_rows(out)) == 2
    assert "discarding 2 existing rows" in capsys.readouterr().err


def test_rows_outside_the_plan_are_refused_not_read_as_this_runs(hf, problems, tmp_path,
                                                                   capsys):
    out = tmp_path / "out"
    run(hf, problems, out, limit=3, n=2)
    with pytest.raises(DistillError, match=r"2 of its 6 rows are not in this plan.*--regenerate"):
        run(hf, problems, out, limit=2, n=2)  # the third problem left the source
    with pytest.raises(DistillError, match=r"3 of its 6 rows are not in this plan"):
        run(hf, problems, out, limit=3)  # n shrank
    assert len(io.read_rows(out)) == 6  # nothing lost
    result = run(hf, problems, out, limit=2, n=2, regenerate=True)
    assert result.rows_written == len(io.read_rows(out)) == 4
    assert "2 rows are not in this plan; --regenerate: discarding 6" in capsys.readouterr().err


def test_duplicate_source_rows_are_generated_once(hf, tmp_path):
    src = tmp_path / "dup.jsonl"
    src.write_text('{"question": "1+1?"}\n{"question": "2+2?"}\n{"question": "1+1?"}\n')
    result = run(hf, src, tmp_path / "out")
    assert result.rows_total == 2 and result.duplicates_skipped == 1


def test_instruction_grid_from_topics_file(hf, tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("tides\nvolcanoes\n")
    generate("instruction", str(topics), str(tmp_path / "out"), backend=hf, max_tokens=8,
             tasks=["explain", "compare"], progress=False)
    rows = io.read_rows(tmp_path / "out")
    assert sorted((json.loads(r["source"])["topic"], r["task"]) for r in rows) == [
        ("tides", "compare"), ("tides", "explain"), ("volcanoes", "compare"),
        ("volcanoes", "explain")]
    assert {r["question"] for r in rows} >= {"Explain tides in simple terms."}
    assert all(r["kind"] == "instruction" for r in rows)


def test_top_k_logprobs_are_kept_per_token(hf, problems, tmp_path):
    run(hf, problems, tmp_path / "out", limit=2, logprobs=3)
    for row in io.read_rows(tmp_path / "out"):
        assert len(row["top_ids"]) == len(row["top_logprobs"]) == row["tokens"]
        for ids, lps in zip(row["top_ids"], row["top_logprobs"]):
            assert len(ids) == 3 and lps == sorted(lps, reverse=True) and lps[0] <= 0
        # greedy: the chosen token is the teacher's top-1 at every step
        assert row["top_ids"][0][0] == _first_token(hf, row)


def _first_token(hf, row):
    text = hf.tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True,
                                            tokenize=False)
    ids = hf.tokenizer(text + row["completion"], add_special_tokens=False)["input_ids"]
    return ids[row["prompt_tokens"]]


def test_a_rerun_with_nothing_to_do_keeps_the_manifest_backend(hf, problems, tmp_path):
    run(hf, problems, tmp_path / "out", limit=1)
    run(hf, problems, tmp_path / "out", limit=1)
    assert io.read_manifest(tmp_path / "out")["backend"] == "hf"


def test_shots_trims_exemplars_and_a_rerun_with_other_shots_is_refused(hf, problems, tmp_path):
    out = tmp_path / "out"
    generate("gsm8k-cot-8shot", str(problems), str(out), model="tiny", backend=hf,
             temperature=0, max_tokens=4, shots=1, limit=2, progress=False)
    assert [len(m) for m in load(out)["messages"]] == [4, 4]  # system, 1 exemplar pair, user
    with pytest.raises(DistillError, match="shots: 1 then, 2 now"):  # all 8 overflow tiny's
        generate("gsm8k-cot-8shot", str(problems), str(out), model="tiny", backend=hf,
                 temperature=0, max_tokens=4, shots=2, limit=2, progress=False)
