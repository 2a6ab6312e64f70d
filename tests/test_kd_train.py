"""``distill train kd``: the student learns the teacher's distributions (better than SFT alone),
online and offline teachers agree, padded vocabularies align, other tokenizers are refused,
and the CLI trains and saves a student both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kd_models import KD_ARGS, heldout_kl, toy_pair
from tiny import build_tiny_model

from distill.cli import main
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.kd.config import DistillKDConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return toy_pair(tmp_path_factory.mktemp("kd"))


def logged(out: Path, key: str) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h[key] for h in history if key in h]


def test_kd_loss_falls_and_the_student_ends_closer_to_the_teacher_than_sft(pair, tmp_path):
    from distill.sft.kd.train import train_kd
    from distill.sft.train import train_sft

    data, test, student, teacher = pair
    before = heldout_kl(student, teacher, test)
    train_kd(str(student), data, tmp_path / "kd", teacher=str(teacher), alpha=0.9, max_steps=6,
             **KD_ARGS)
    train_sft(str(student), data, tmp_path / "sft", max_steps=6, **KD_ARGS)
    kd = logged(tmp_path / "kd", "kd")
    assert kd[-1] < 0.95 * kd[0], kd
    kl_kd, kl_sft = (heldout_kl(tmp_path / m, teacher, test) for m in ("kd", "sft"))
    print(f"held-out KL(teacher || student): untrained {before:.3f}, sft {kl_sft:.3f}, "
          f"kd {kl_kd:.3f}")
    assert kl_kd < kl_sft and kl_kd < before
    card = (tmp_path / "kd" / "README.md").read_text()
    assert "distill train kd" in card and f"online: `{teacher}`" in card
    assert (tmp_path / "kd" / "model.safetensors").exists()


def make_trainer(student: Path, data: Path, out: Path, **fields):
    """The trainer ``train_kd`` would build (same method hooks), without training."""
    from transformers import AutoTokenizer

    from distill.sft.data import build_examples, load_rows
    from distill.sft.kd.train import KDMethod
    from distill.sft.train import Examples

    config = build_config(config_class=DistillKDConfig, output_dir=str(out),
                          **{**KD_ARGS, **fields})
    method = KDMethod(config)
    tokenizer = AutoTokenizer.from_pretrained(student)
    method.prepare(tokenizer, str(student))
    rows, _, _ = load_rows(data)
    columns, report = build_examples(rows, tokenizer, config, verbose=False)
    train, _ = method.datasets(Examples(rows, columns, report), None)
    return method.trainer_class(model=str(student), args=config, train_dataset=train,
                                processing_class=tokenizer, **method.trainer_kwargs())


def first_batch_loss(trainer) -> float:
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


@pytest.mark.parametrize("packing", [False, True])
def test_offline_and_online_teachers_give_the_same_loss(pair, tmp_path, packing):
    from distill.sft.kd.capture import capture_logits

    data, _, student, teacher = pair
    capture_logits(str(teacher), data, tmp_path / "logits", 8, student=str(student),
                   config=build_config(output_dir="unused", max_length=96))
    fields = {"loss": "topk", "top_k": 8, "alpha": 0.7, "kd_temperature": 2.0, "packing": packing,
              "max_length": 256 if packing else 96}
    online = make_trainer(student, data, tmp_path / "on", teacher=str(teacher), **fields)
    offline = make_trainer(student, data, tmp_path / "off",
                           offline_logits=str(tmp_path / "logits"), **fields)
    if packing:  # several sequences per row: the cached columns were packed along
        row = online.train_dataset[0]
        assert len(row["seq_lengths"]) > 1
    on, off = first_batch_loss(online), first_batch_loss(offline)
    assert on > 0.5
    assert off == pytest.approx(on, rel=2e-3)


def test_padded_teacher_vocabulary_is_aligned(pair, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    data, _, student, teacher = pair
    padded = tmp_path / "padded"
    model = AutoModelForCausalLM.from_pretrained(teacher)
    rows = model.get_output_embeddings().weight.shape[0]
    model.resize_token_embeddings(rows + 40)  # new rows get real (mean) logits
    model.save_pretrained(padded)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (padded / name).write_bytes((teacher / name).read_bytes())
    fields = {"loss": "forward_kl", "alpha": 0.7}
    aligned = first_batch_loss(make_trainer(student, data, tmp_path / "a", teacher=str(padded),
                                            **fields))
    assert f"padded to {rows} (student) and {rows + 40} (teacher)" in capsys.readouterr().err
    same = first_batch_loss(make_trainer(student, data, tmp_path / "b", teacher=str(teacher),
                                         **fields))
    assert aligned == pytest.approx(same, rel=1e-5)


def test_a_teacher_with_another_tokenizer_is_refused(pair, tmp_path):
    from distill.sft.kd.train import train_kd

    data, _, student, _ = pair
    other = build_tiny_model(tmp_path / "other")  # a tokenizer trained on another corpus
    with pytest.raises(DistillError, match="different tokenizers.*distill train sft"):
        train_kd(str(student), data, tmp_path / "kd", teacher=str(other), **KD_ARGS)


def test_config_needs_exactly_one_teacher_and_valid_options(tmp_path):
    with pytest.raises(DistillError, match="exactly one teacher"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path))
    with pytest.raises(DistillError, match="exactly one teacher"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teacher="t",
                     offline_logits="l")
    with pytest.raises(DistillError, match="kd loss 'kl' is not one of"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teacher="t",
                     loss="kl")
    with pytest.raises(DistillError, match="needs --top_k"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teacher="t",
                     loss="topk")
    with pytest.raises(DistillError, match="alpha_schedule 'cosine_warm' is not one of"):
        build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teacher="t",
                     alpha_schedule="cosine_warm")
    config = build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), teacher="t",
                          kd_temperature=1.0, kd_temperature_end=3.0,
                          kd_temperature_schedule="linear",
                          alpha=0.2, alpha_end=0.8, alpha_schedule="linear")
    assert config.schedule(5, 10) == pytest.approx((2.0, 0.5))


def test_cli_trains_online_and_offline(pair, tmp_path, capsys):
    data, _, student, teacher = pair
    flags = [f"--{k}={v}" for k, v in KD_ARGS.items()] + ["--max_steps=2"]
    common = ["--student", str(student), "--data", str(data)]
    assert main(["train", "kd", *common, "--out", str(tmp_path / "online"), "--teacher",
                 str(teacher), "--loss", "jsd", "--kd-temperature", "2", "--alpha", "0.8",
                 *flags]) == 0
    assert main(["logits", "capture", "--teacher", str(teacher), "--student", str(student),
                 "--data", str(data), "--out", str(tmp_path / "logits"), "--top-k", "4",
                 "--max_length", "96"]) == 0
    assert "bytes/token on disk" in capsys.readouterr().out
    assert main(["train", "kd", *common, "--out", str(tmp_path / "offline"), "--offline-logits",
                 str(tmp_path / "logits"), "--loss", "topk", *flags]) == 0
    for run in ("online", "offline"):
        assert (tmp_path / run / "model.safetensors").exists()
        assert logged(tmp_path / run, "kd")
    assert "temperature: 2" in (tmp_path / "online" / "README.md").read_text()
    assert "top-4 log-probs" in (tmp_path / "offline" / "README.md").read_text()
    assert main(["train", "kd", *common, "--out", str(tmp_path / "x"), *flags]) == 2
    assert "exactly one teacher" in capsys.readouterr().err



def test_recipe_train_stage_distills_from_the_recipes_teacher(pair, tmp_path):
    import shutil

    from distill.recipe import RUNNERS

    data, _, student, teacher = pair
    shutil.copytree(data, tmp_path / "filter" / "kept")
    recipe = {"teacher": {"model": str(teacher)}, "student": {"model": str(student)},
              "train": {"method": "kd", "loss": "reverse_kl", "max_steps": 2, **KD_ARGS}}
    assert RUNNERS["train"](recipe, tmp_path)["global_step"] == 2
    assert f"online: `{teacher}`" in (tmp_path / "train" / "README.md").read_text()
    with pytest.raises(DistillError, match="method 'dpo' is not one of sft, kd, onpolicy"):
        RUNNERS["train"]({**recipe, "train": {"method": "dpo"}}, tmp_path)


def test_rerun_resumes_and_refuses_other_kd_settings(pair, tmp_path):
    from distill.sft.kd.train import train_kd

    data, _, student, teacher = pair
    args = {**KD_ARGS, "max_steps": 2, "save_strategy": "steps", "save_steps": 1}
    out = tmp_path / "kd"
    train_kd(str(student), data, out, teacher=str(teacher), kd_temperature=2.0, **args)
    again = train_kd(str(student), data, out, teacher=str(teacher), kd_temperature=2.0, **args)
    assert again.resumed_from is None and again.metrics["global_step"] == 2  # finished: kept
    with pytest.raises(DistillError, match="other settings \\(kd_temperature changed\\)"):
        train_kd(str(student), data, out, teacher=str(teacher), kd_temperature=1.0, **args)
