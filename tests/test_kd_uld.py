"""Cross-tokenizer KD, ``distill train kd --loss uld``: a student learns from a teacher whose
tokenizer is not its own, online and from a capture of the teacher's own tokenization; the
completions pair by position; every other loss still refuses another tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kd_models import KD_ARGS, other_tokenizer_teacher, toy_pair

from distill.cli import main
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.kd.config import DistillKDConfig

K = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("uld")
    data, test, student, _ = toy_pair(root, n_train=32)
    return data, test, student, other_tokenizer_teacher(root / "other")


def logged(out: Path, key: str) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h[key] for h in history if key in h]


def test_the_teachers_own_sequences_pair_with_the_students_completion_tokens(pair):
    from transformers import AutoTokenizer

    from distill.sft.data import build_examples, load_rows
    from distill.sft.kd.cross import TeacherSequenceCollator, counted, teacher_columns

    data, _, student, teacher = pair
    config = build_config(output_dir="unused", max_length=96)
    rows, _, _ = load_rows(data)
    s_tok, t_tok = (AutoTokenizer.from_pretrained(m) for m in (student, teacher))
    assert s_tok.get_vocab() != t_tok.get_vocab()
    columns, report = build_examples(rows, s_tok, config, verbose=False)
    ids, positions = teacher_columns(columns["labels"], report.example_rows, rows, t_tok,
                                     config, str(teacher))
    t_columns, _ = build_examples(rows, t_tok, config, verbose=False)
    for e in (0, 5):
        completion = rows[report.example_rows[e]]["completion"]
        mine = counted(columns["labels"][e])
        end = "<|im_end|>\n"  # ChatML's end of turn, counted
        assert s_tok.decode(np.asarray(columns["input_ids"][e])[mine]) == completion + end
        theirs = counted(t_columns["labels"][e])
        # the teacher's counted tokens are the same completion in its own tokens; fewer of
        # them (it keeps digits together), so the student's tail has no partner
        assert t_tok.decode(np.asarray(t_columns["input_ids"][e])[theirs]) == completion + end
        assert len(theirs) < len(mine) and positions[e] == (theirs - 1).tolist()
        assert ids[e] == t_columns["input_ids"][e][:theirs[-1]]  # cut after the last pair

    # the collator points each student counted token at its teacher hidden state, or -1
    examples = [{"input_ids": columns["input_ids"][e], "labels": columns["labels"][e],
                 "teacher_input_ids": ids[e], "teacher_positions": positions[e]}
                for e in (0, 5)]
    batch = TeacherSequenceCollator(lambda xs: {"n": len(xs)})(examples)
    width = batch["teacher_input_ids"].shape[1]
    assert width == max(len(ids[0]), len(ids[5]))
    want = []
    for b, e in enumerate((0, 5)):
        n = len(counted(columns["labels"][e]))
        want += [b * width + p for p in positions[e]] + [-1] * (n - len(positions[e]))
    assert batch["teacher_index"].tolist() == want
    assert batch["teacher_attention_mask"].sum().item() == len(ids[0]) + len(ids[5])


def test_uld_trains_across_tokenizers_online_and_offline_from_the_cli(pair, tmp_path, capsys):
    data, _, student, teacher = pair
    # ULD's signal is weak on a random student (its sign gradient mostly sharpens): a larger
    # learning rate than the other KD tests'
    args = {**KD_ARGS, "learning_rate": 3e-2, "max_steps": 6, "alpha": 0.9}
    flags = [f"--{k}={v}" for k, v in args.items()]
    common = ["--student", str(student), "--data", str(data), "--loss", "uld"]
    assert main(["train", "kd", *common, "--out", str(tmp_path / "online"), "--teacher",
                 str(teacher), "--eval-data", str(data), *flags]) == 0
    assert "uld pairs" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "online" / "metrics.json").read_text())
    assert metrics["eval_loss"] > 0  # evaluation pairs the teacher's sequences too
    assert main(["logits", "capture", "--teacher", str(teacher), "--student", str(student),
                 "--data", str(data), "--out", str(tmp_path / "logits"), "--top-k", str(K),
                 "--max_length", "96"]) == 0
    manifest = json.loads((tmp_path / "logits" / "manifest.json").read_text())
    assert manifest["tokenizer"]["name"] == str(teacher)  # the teacher's own tokenization
    assert manifest["vocab_size"] == 360  # the teacher's rows; the student has 259
    assert main(["train", "kd", *common, "--out", str(tmp_path / "offline"), "--offline-logits",
                 str(tmp_path / "logits"), *flags]) == 0
    for run in ("online", "offline"):
        kd = logged(tmp_path / run, "kd")
        assert len(kd) == 6 and kd[-1] < 0.9 * kd[0], (run, kd)
        assert (tmp_path / run / "model.safetensors").exists()
        assert "another tokenizer" in (tmp_path / run / "README.md").read_text()


def test_online_top_k_and_its_capture_give_the_same_loss(pair, tmp_path):
    from test_kd_train import first_batch_loss, make_trainer

    from distill.sft.kd.capture import capture_logits

    data, _, student, teacher = pair
    capture_logits(str(teacher), data, tmp_path / "logits", K, student=str(student),
                   config=build_config(output_dir="unused", max_length=96))
    fields = {"loss": "uld", "top_k": K, "alpha": 0.7, "kd_temperature": 2.0}
    online = first_batch_loss(make_trainer(student, data, tmp_path / "on", teacher=str(teacher),
                                           **fields))
    offline = make_trainer(student, data, tmp_path / "off",
                           offline_logits=str(tmp_path / "logits"), **fields)
    assert first_batch_loss(offline) == pytest.approx(online, rel=2e-3)
    batch = offline._prepare_inputs(next(iter(offline.get_train_dataloader())))
    ids = batch["teacher_topk_ids"]
    assert (ids[:, 0] < 0).any() and (ids[:, 0] >= 0).any()  # the student's unpaired tail
    with torch.no_grad():  # packed rows carry the per-token cache along: same loss
        packed = make_trainer(student, data, tmp_path / "packed", packing=True, max_length=256,
                              offline_logits=str(tmp_path / "logits"), **fields)
        assert float(packed.compute_loss(packed.model, packed._prepare_inputs(
            next(iter(packed.get_train_dataloader()))))) > 0


def test_other_losses_and_settings_refuse_another_tokenizer_with_one_line(pair, tmp_path,
                                                                           capsys):
    from distill.sft.kd.capture import capture_logits
    from distill.sft.kd.train import train_kd

    data, _, student, teacher = pair
    args = {**KD_ARGS, "max_steps": 1}
    common = ["--student", str(student), "--data", str(data), "--max_steps=1"]
    assert main(["train", "kd", *common, "--out", str(tmp_path / "a"), "--teacher",
                 str(teacher), "--loss", "jsd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "different tokenizers" in err[-1] and "--loss uld" in err[-1]
    capture_logits(str(teacher), data, tmp_path / "logits", 4, student=str(student),
                   config=build_config(output_dir="unused", max_length=96))
    with pytest.raises(DistillError, match="captured on the tokenizer of .* only --loss uld"):
        train_kd(str(student), data, tmp_path / "b", offline_logits=str(tmp_path / "logits"),
                 loss="topk", **args)
    with pytest.raises(DistillError, match="drop --packing"):
        train_kd(str(student), data, tmp_path / "c", teacher=str(teacher), loss="uld",
                 packing=True, **args)
    with pytest.raises(DistillError, match="needs one tokenizer"):
        train_kd(str(student), data, tmp_path / "d", teacher=str(teacher), loss="uld",
                 feature_weight=1.0, **args)
    with pytest.raises(DistillError, match="'uld' takes one teacher"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teachers="a,b",
                     loss="uld")
