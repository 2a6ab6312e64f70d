"""Training data prepared by ``Dataset.map`` from the memory-mapped dataset: the same sequences
and report as building each row on its own, cached beside the data and reused by a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.data import build_examples, load_rows

COMPLETION = "Let me think. 3 * 4 = 12 and 12 + 2 = 14.\n#### 14"


def mixed_rows(n: int) -> list[dict]:
    """Kept rows (with and without an answer span, some cut after their answer) and rows
    dropped as bad (empty completion, span outside the completion) or truncated."""
    out = []
    for i in range(n):
        completion, span = f"Step {i}: " + COMPLETION, None
        kind = i % 7
        if kind == 1:
            completion = "blah " * 60 + "#### 14"  # cut before its answer
        elif kind == 2:
            completion = "   "  # bad: empty
        elif kind == 3:
            span = [5, 500]  # bad: outside the completion
        elif kind == 4:
            completion = "#### 14\n" + "blah " * 60  # cut after its answer
            span = [5, 7]
        elif kind != 5:  # kind 5: no answer span
            span = [len(completion) - 2, len(completion)]
        out.append({"id": f"r{i}", "messages": [{"role": "user", "content": f"Problem {i}?"}],
                    "completion": completion, "answer_span": span})
    return out


def config(**kw):
    settings = {"max_length": 90, "on_bad_row": "drop", "on_truncated": "drop",
                "max_dropped_fraction": 0.6, **kw}
    return build_config(output_dir="/tmp/unused", **settings)


@pytest.fixture
def tiny(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("objective", ["sft", "step_by_step"])
def test_map_gives_the_sequences_and_report_of_each_row_alone(tiny, tmp_path, objective):
    rows = mixed_rows(600)  # more than one map batch
    settings = config(objective=objective)
    dataset, _, _ = load_rows(write_jsonl(tmp_path / "rows.jsonl", rows))
    assert isinstance(dataset, Dataset) and dataset.cache_files  # memory-mapped, no lists
    columns, report = build_examples(dataset, tiny, settings, verbose=False)
    assert isinstance(columns, Dataset) and columns.column_names == ["input_ids", "labels",
                                                                     "span_ids"]

    expected = {"input_ids": [], "labels": [], "span_ids": []}
    reasons, kept_rows = {}, []
    for i, r in enumerate(rows):
        try:
            alone, _ = build_examples([r], tiny, settings, verbose=False)
        except DistillError as e:  # "no trainable rows left of 1: 1 rows REASON (e.g. ID)"
            reason = str(e).split(": 1 rows ", 1)[1].rsplit(" (e.g.", 1)[0]
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        for name in expected:
            expected[name] += alone[name]
        kept_rows += [i] * len(alone["input_ids"])
    assert columns.to_dict() == expected
    assert report.example_rows == kept_rows
    assert dict(report.dropped) == reasons
    assert report.dropped_rows == 600 - len(set(kept_rows)) > 200

    in_memory, whole = build_examples(rows, tiny, settings, verbose=False)
    assert in_memory == expected
    assert report.to_dict() == whole.to_dict()
    assert report.samples == whole.samples and report.lines() == whole.lines()
    if objective == "sft":
        assert report.no_span and report.tail_truncated and report.no_end_of_turn


def test_a_rerun_reuses_the_tokenized_cache(tiny, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", mixed_rows(700))
    dataset, _, _ = load_rows(data)
    first, report = build_examples(dataset, tiny, config(), verbose=False)
    cache = {f["filename"] for f in first.cache_files}
    mtimes = {f: Path(f).stat().st_mtime_ns for f in cache}

    again, again_report = build_examples(load_rows(data)[0], tiny, config(), verbose=False)
    assert {f["filename"] for f in again.cache_files} == cache
    assert {f: Path(f).stat().st_mtime_ns for f in cache} == mtimes  # not rewritten
    assert again.to_dict() == first.to_dict() and again_report.to_dict() == report.to_dict()

    other, _ = build_examples(dataset, tiny, config(max_length=80), verbose=False)
    assert {f["filename"] for f in other.cache_files} != cache  # a data setting changed


def test_a_save_to_disk_folder_gets_no_cache_files(tiny, tmp_path):
    folder = tmp_path / "saved"
    Dataset.from_list(mixed_rows(70)).save_to_disk(str(folder))
    before = sorted(p.name for p in folder.iterdir())
    columns, report = build_examples(load_rows(folder)[0], tiny, config(), verbose=False)
    assert report.examples > 0 and columns.cache_files
    assert sorted(p.name for p in folder.iterdir()) == before
    assert all(not f["filename"].startswith(str(folder)) for f in columns.cache_files)


def test_checks_stop_the_map_path_like_the_list_path(tiny, tmp_path):
    dataset, _, _ = load_rows(write_jsonl(tmp_path / "rows.jsonl", mixed_rows(70)))
    with pytest.raises(DistillError, match=r"of 70 rows cannot be trained as asked: .*e\.g\. r2"):
        build_examples(dataset, tiny, config(on_bad_row="error"), verbose=False)
    with pytest.raises(DistillError, match=r"rows \(\d+%\) would be dropped"):
        build_examples(dataset, tiny, config(max_dropped_fraction=0.1), verbose=False)
