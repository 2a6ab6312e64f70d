"""``distill train gkd``: TRL's GKDTrainer on a distill dataset, the student sampling its own
completions, saved with its card; teachers it cannot use are refused up front."""

from __future__ import annotations

import json

import pytest
from kd_models import KD_ARGS, toy_pair
from tiny import build_tiny_model

from distill.cli import main
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.onpolicy.gkd import DistillGKDConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return toy_pair(tmp_path_factory.mktemp("gkd"), n_train=24)


@pytest.mark.parametrize(("lmbda", "seq_kd", "sampler"), [("1", [], 32), ("0", ["--seq-kd"], 64)],
                         ids=["on-policy", "seq-kd"])
def test_gkd_trains_on_generated_samples_and_saves_the_student(pair, tmp_path, monkeypatch,
                                                               lmbda, seq_kd, sampler):
    """lmbda = 1: every step on the student's own samples; lmbda = 0 with seq_kd: on the
    teacher's (the student has hidden size 32, the teacher 64)."""
    from trl.experimental.gkd import GKDTrainer

    data, _, student, teacher = pair
    sampled = []
    generate = GKDTrainer.generate_on_policy_outputs

    def record(model, inputs, generation_config):  # a spy: records, then runs TRL's own
        out = generate(model, inputs, generation_config)
        sampled.append((model.config.hidden_size, inputs["prompts"].shape[1], out[0].shape[1]))
        return out

    monkeypatch.setattr(GKDTrainer, "generate_on_policy_outputs", staticmethod(record))
    out = tmp_path / "gkd"
    args = [f"--{k}={v}" for k, v in {**KD_ARGS, "per_device_train_batch_size": 4}.items()]
    assert main(["train", "gkd", "--student", str(student), "--teacher", str(teacher), "--data",
                 str(data), "--out", str(out), "--lmbda", lmbda, *seq_kd, "--beta", "0.5",
                 "--max-new-tokens", "6", "--max_steps", "3", *args]) == 0
    assert len(sampled) == 3
    for hidden, prompt, total in sampled:
        assert hidden == sampler and prompt < total <= prompt + 6
    losses = [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())[
        "log_history"] if "loss" in h]
    assert len(losses) == 3 and all(x > 0 for x in losses)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    card = (out / "README.md").read_text()
    assert "distill train gkd" in card and f"lmbda {lmbda}" in card


def test_gkd_refuses_what_it_cannot_train(pair, tmp_path):
    from distill.sft.onpolicy.gkd import train_gkd

    data, _, student, _ = pair
    other = build_tiny_model(tmp_path / "other")
    with pytest.raises(DistillError, match="different tokenizers"):
        train_gkd(str(student), data, tmp_path / "a", teacher_model_name_or_path=str(other),
                  **KD_ARGS)
    with pytest.raises(DistillError, match="needs --teacher"):
        build_config(config_class=DistillGKDConfig, output_dir=str(tmp_path))
    with pytest.raises(DistillError, match="lmbda must be in \\[0, 1\\]"):
        build_config(config_class=DistillGKDConfig, output_dir=str(tmp_path),
                     teacher_model_name_or_path="t", lmbda=1.5)
    with pytest.raises(DistillError, match="weighs every completion token alike"):
        build_config(config_class=DistillGKDConfig, output_dir=str(tmp_path),
                     teacher_model_name_or_path="t", answer_weight=2.0)
