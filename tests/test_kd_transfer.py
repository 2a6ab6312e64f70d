"""``distill train kd`` with feature and attention transfer terms: a tiny run trains on CPU,
the projections train with the student and resume with it, bad settings are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from kd_models import KD_ARGS, toy_pair
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from distill.cli import main
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.kd.config import DistillKDConfig
from distill.sft.kd.transfer import EMA_FILE, PROJECTOR_FILE

TRANSFER = {"feature_weight": 1.0, "attention_weight": 1.0, "alpha": 0.5, "max_steps": 6,
            "save_strategy": "steps", "save_steps": 3}
SELF = {"self_distill_decay": 0.5, "deep_supervision_weight": 0.5, "alpha": 0.5, "max_steps": 4,
        "save_strategy": "steps", "save_steps": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A student (hidden 32) distilled from a teacher (hidden 64) with both transfer terms."""
    from distill.sft.kd.train import train_kd

    root = tmp_path_factory.mktemp("transfer")
    data, _, student, teacher = toy_pair(root)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():  # peaked attention maps, unlike a random model's near-uniform ones
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
    model.save_pretrained(teacher)
    out = root / "kd"
    train_kd(str(student), data, out, teacher=str(teacher), **{**KD_ARGS, **TRANSFER})
    return data, student, teacher, out


def logged(out, key):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h[key] for h in history if key in h]


def test_feature_and_attention_terms_train_on_cpu(run):
    _, _, teacher, out = run
    features, attention = logged(out, "feature_loss"), logged(out, "attention_loss")
    assert len(features) == len(attention) == 6
    assert sum(features[-2:]) < 0.8 * sum(features[:2]), features
    assert sum(attention[-2:]) < sum(attention[:2]), attention
    assert all(0 <= c <= 1 for c in logged(out, "feature_cka"))
    card = (out / "README.md").read_text()
    assert "- feature transfer: weight 1, `mse`, linear projection, blocks uniform" in card
    assert "- attention transfer: weight 1, `kl`, blocks uniform" in card
    student = AutoModelForCausalLM.from_pretrained(out)  # the folder is a plain student
    assert set(student.state_dict()) == set(AutoModelForCausalLM.from_pretrained(
        teacher).state_dict())
    assert AutoConfig.from_pretrained(out).hidden_size == 32


def test_projections_train_and_are_saved_with_each_checkpoint(run):
    _, _, _, out = run
    at = {step: load_file(out / f"checkpoint-{step}" / PROJECTOR_FILE) for step in (3, 6)}
    final = load_file(out / PROJECTOR_FILE)
    assert set(final) == {f"projector.maps.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    assert final["projector.maps.0.weight"].shape == (64, 32)
    assert all(torch.equal(final[k], at[6][k]) for k in final)
    assert not torch.equal(at[3]["projector.maps.1.weight"], at[6]["projector.maps.1.weight"])


def test_a_resumed_run_continues_the_projections(run, tmp_path):
    from distill.sft.kd.train import train_kd

    data, student, teacher, out = run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "checkpoint-6")
    (resumed / PROJECTOR_FILE).unlink()
    train_kd(str(student), data, resumed, teacher=str(teacher), **{**KD_ARGS, **TRANSFER})
    a, b = load_file(out / PROJECTOR_FILE), load_file(resumed / PROJECTOR_FILE)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    wa = load_file(out / "model.safetensors")
    wb = load_file(resumed / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_bad_transfer_settings_are_refused(run, tmp_path):
    from distill.sft.kd.train import train_kd

    data, student, teacher, _ = run
    config = {"config_class": DistillKDConfig, "output_dir": str(tmp_path)}
    with pytest.raises(DistillError, match="need the online teacher"):
        build_config(**config, offline_logits="logits", feature_weight=1.0)
    with pytest.raises(DistillError, match="attention_layers needs attention_weight > 0"):
        build_config(**config, teacher="t", attention_layers="0:1")
    with pytest.raises(DistillError, match="feature_loss must be one of"):
        build_config(**config, teacher="t", feature_weight=1.0, feature_loss="l1")
    with pytest.raises(DistillError, match="--feature-layers: pair 0:5 is out of range"):
        train_kd(str(student), data, tmp_path / "x", teacher=str(teacher), feature_weight=1.0,
                 feature_layers="0:5", **KD_ARGS)


def test_cli_flags(run, tmp_path):
    data, student, teacher, _ = run
    flags = [f"--{k}={v}" for k, v in KD_ARGS.items()] + ["--max_steps=1"]
    assert main(["train", "kd", "--student", str(student), "--data", str(data), "--out",
                 str(tmp_path / "cli"), "--teacher", str(teacher), "--feature-layers", "1:1",
                 "--feature-weight", "0.5", "--attention-layers", "0:1",
                 "--attention-weight", "2", "--feature_loss", "cosine", *flags]) == 0
    card = (tmp_path / "cli" / "README.md").read_text()
    assert "- feature transfer: weight 0.5, `cosine`, linear projection, blocks 1:1" in card
    assert "- attention transfer: weight 2, `kl`, blocks 0:1" in card
    assert set(load_file(tmp_path / "cli" / PROJECTOR_FILE)) == {"projector.maps.1.weight",
                                                                 "projector.maps.1.bias"}


@pytest.fixture(scope="module")
def self_run(run, tmp_path_factory):
    """Self-distillation (EMA teacher, decay 0.5) with deep supervision; a checkpoint a step."""
    from distill.sft.kd.train import train_kd

    data, student, _, _ = run
    out = tmp_path_factory.mktemp("self") / "kd"
    train_kd(str(student), data, out, **{**KD_ARGS, **SELF})
    return data, student, out


def test_self_distillation_follows_the_ema_formula(self_run):
    _, _, out = self_run
    assert len(logged(out, "kd")) == len(logged(out, "deep_supervision")) == 4
    assert all(v > 0 for v in logged(out, "deep_supervision"))
    ema = {k: load_file(out / f"checkpoint-{k}" / EMA_FILE) for k in range(1, 5)}
    weights = {k: load_file(out / f"checkpoint-{k}" / "model.safetensors") for k in range(1, 5)}
    shared = set(ema[4]) & set(weights[4])  # the tied embedding is stored under one name
    assert len(shared) >= len(weights[4]) - 1
    for k in (2, 3, 4):  # after step k: ema = 0.5 * ema_(k-1) + 0.5 * student_k
        for name in shared:
            assert torch.allclose(ema[k][name], 0.5 * ema[k - 1][name] + 0.5 * weights[k][name],
                                  atol=1e-6), (k, name)
    final = load_file(out / EMA_FILE)
    assert all(torch.equal(final[n], ema[4][n]) for n in final)
    card = (out / "README.md").read_text()
    assert "- teacher: the student's moving average (EMA decay 0.5)" in card
    assert "- deep supervision: weight 0.5, blocks all intermediate" in card


def test_a_resumed_self_distillation_continues_the_ema(self_run, tmp_path):
    from distill.sft.kd.train import train_kd

    data, student, out = self_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    for k in (3, 4):
        shutil.rmtree(resumed / f"checkpoint-{k}")
    train_kd(str(student), data, resumed, **{**KD_ARGS, **SELF})
    for name in (EMA_FILE, "model.safetensors"):
        a, b = load_file(out / name), load_file(resumed / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_self_distillation_settings_and_cli(self_run, tmp_path):
    data, student, _ = self_run
    flags = [f"--{k}={v}" for k, v in KD_ARGS.items()] + ["--max_steps=1"]
    assert main(["train", "kd", "--student", str(student), "--data", str(data), "--out",
                 str(tmp_path / "cli"), "--self-distill-decay", "0.99", *flags]) == 0
    assert (tmp_path / "cli" / EMA_FILE).exists()
    config = {"config_class": DistillKDConfig, "output_dir": str(tmp_path)}
    with pytest.raises(DistillError, match="exactly one teacher"):
        build_config(**config, teacher="t", self_distill_decay=0.9)
    with pytest.raises(DistillError, match=r"self_distill_decay must be in \[0, 1\)"):
        build_config(**config, self_distill_decay=1.0)
    assert build_config(**config, self_distill_decay=0.99).teacher is None


def test_extra_terms_of_one_batch_match_a_reference(run, tmp_path):
    from test_kd_train import make_trainer

    from distill.sft.kd.features import attention_loss

    data, student, teacher, _ = run
    trainer = make_trainer(student, data, tmp_path / "t", teacher=str(teacher), alpha=0.5,
                           kd_temperature=2.0, feature_weight=2.0, attention_weight=3.0,
                           deep_supervision_weight=0.5)
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    with torch.no_grad():
        terms = trainer.loss_terms(trainer.model, trainer.kd_batch(trainer.model, dict(inputs)))
        kwargs = {"input_ids": ids, "attention_mask": attn, "output_hidden_states": True,
                  "output_attentions": True}
        s, t = trainer.model(**kwargs), trainer.teacher(**kwargs)
        mask = attn.bool()
        counted = labels[:, 1:] != -100
        # deep supervision: block 0 of 2, through the final norm and head, KL at T=2 times T^2
        exit_logits = trainer.model.lm_head(trainer.model.model.norm(s.hidden_states[1]))
        p = (t.logits[:, :-1][counted] / 2).log_softmax(-1)
        q = (exit_logits[:, :-1][counted] / 2).log_softmax(-1)
        deep = 4 * (p.exp() * (p - q)).sum(-1).sum() / counted.sum()
        features = trainer.features(s.hidden_states, t.hidden_states, mask)
        attention = attention_loss(s.attentions, t.attentions, {0: 0, 1: 1}, mask)
    assert set(terms) == {"logits", "features", "attention", "deep_supervision"}
    assert terms["deep_supervision"].item() == pytest.approx(0.5 * deep.item(), rel=1e-4)
    assert terms["features"].item() == pytest.approx(2 * features.item(), rel=1e-5)
    assert terms["attention"].item() == pytest.approx(3 * attention.item(), rel=1e-5)
    assert trainer.model.config._attn_implementation == "eager"
