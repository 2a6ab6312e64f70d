"""``distill logits capture``: the teacher's top-k log-probs of every counted token, compact
(<= 6·k bytes per token), exact, resumable; training refuses a cache that is not its own."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from kd_models import KD_ARGS, toy_pair

from distill import io
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.kd.capture import capture_logits

K = 8


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    data, _, student, teacher = toy_pair(root, n_train=48)
    result = capture_logits(str(teacher), data, root / "logits", K, student=str(student),
                            config=build_config(output_dir="unused", max_length=96),
                            batch_size=5, shard_size=16)
    return result, data, student, teacher


def test_capture_is_compact_and_holds_the_teachers_top_k(captured):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.sft.data import build_examples, load_rows

    result, data, student, teacher = captured
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["top_k"] == K and manifest["examples"] == 48
    assert manifest["payload_bytes_per_token"] == 6 * K
    assert result.bytes_per_token <= 6 * K, result.summary()
    assert result.tokens == manifest["tokens"] > 0
    assert len(io.shard_paths(result.out)) == 3
    schema = pq.read_schema(io.shard_paths(result.out)[0])
    assert str(schema.field("ids").type) == "list<element: int32>"
    assert str(schema.field("logprobs").type) == "list<element: halffloat>"

    # The stored values are the teacher's own top-k log-probs at the counted positions.
    tokenizer = AutoTokenizer.from_pretrained(student)
    rows, _, _ = load_rows(data)
    columns, report = build_examples(rows, tokenizer, build_config(output_dir="unused"),
                                     verbose=False)
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    cached = {r["example"]: r for r in io.read_rows(result.out)}
    for e in (0, 17, 47):
        ids, labels = torch.tensor([columns["input_ids"][e]]), torch.tensor(columns["labels"][e])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, :-1][labels[1:] != -100].log_softmax(-1)
        values, indices = logp.topk(K, dim=-1)
        row = cached[e]
        assert row["id"] == rows[report.example_rows[e]]["id"]
        assert row["tokens"] == len(values)
        np.testing.assert_array_equal(np.reshape(row["ids"], (-1, K)), indices.numpy())
        np.testing.assert_allclose(np.reshape(row["logprobs"], (-1, K)), values.numpy(),
                                   rtol=1e-3, atol=1e-3)


def test_capture_resumes_after_a_crash_and_refuses_another_capture(captured, tmp_path):
    import shutil

    result, data, student, teacher = captured
    out = tmp_path / "logits"
    shutil.copytree(result.out, out)
    before = sorted(io.read_rows(out), key=lambda r: r["example"])
    io.shard_paths(out)[-1].unlink()  # killed before the last shard was written
    manifest = json.loads((out / "manifest.json").read_text())
    io.write_manifest(out, {**manifest, "complete": False})
    config = build_config(output_dir="unused", max_length=96)
    again = capture_logits(str(teacher), data, out, K, student=str(student), config=config,
                           batch_size=5, shard_size=16)
    assert again.captured == 16 and again.examples == 48
    assert sorted(io.read_rows(out), key=lambda r: r["example"]) == before
    with pytest.raises(DistillError, match="holds another capture \\(top_k differ"):
        capture_logits(str(teacher), data, out, 4, student=str(student), config=config)
    fresh = capture_logits(str(teacher), data, out, 4, student=str(student), config=config,
                           restart=True)
    assert fresh.captured == 48 and fresh.bytes_per_token <= 6 * 4


def test_training_refuses_a_cache_that_is_not_its_own(captured, tmp_path):
    from distill.sft.kd.train import train_kd

    result, data, student, _ = captured
    args = {**KD_ARGS, "max_steps": 1}
    with pytest.raises(DistillError, match="captured for other training sequences.*"
                       "max_length, objective, weights"):
        train_kd(str(student), data, tmp_path / "a", offline_logits=str(result.out),
                 answer_weight=0.0, **args)
    with pytest.raises(DistillError, match="top_k 16 > the 8 log-probs"):
        train_kd(str(student), data, tmp_path / "b", offline_logits=str(result.out), top_k=16,
                 **args)
    with pytest.raises(DistillError, match="not a distill logits capture"):
        train_kd(str(student), data, tmp_path / "c", offline_logits=str(data), **args)
    with pytest.raises(DistillError, match="offline logits cover the training data only"):
        train_kd(str(student), data, tmp_path / "d", offline_logits=str(result.out),
                 eval_data=data, **args)


def test_teacher_dtype_and_device_were_dtype_and_device(capsys):
    from distill.cli import build_parser

    common = ["logits", "capture", "--teacher", "t", "--student", "s", "--data", "d", "--out",
              "o", "--top-k", "4"]
    args = build_parser().parse_args([*common, "--teacher-dtype", "float16", "--teacher-device",
                                      "cpu", "--max_length", "96"])
    assert (args.teacher_dtype, args.teacher_device, args.argv) == ("float16", "cpu",
                                                                    ["--max_length", "96"])
    assert "deprecated" not in capsys.readouterr().err
    args = build_parser().parse_args([*common, "--dtype", "bfloat16", "--device", "cuda:1"])
    assert (args.teacher_dtype, args.teacher_device) == ("bfloat16", "cuda:1")
    err = capsys.readouterr().err
    assert "--dtype is deprecated and will be removed in 0.3; use --teacher-dtype" in err
    assert "--device is deprecated and will be removed in 0.3; use --teacher-device" in err
