"""Tiny teacher/student pairs for the logit-distillation tests: real HF models and tokenizers
built from a config (see ``test_sft_toy``), on the toy addition task."""

from __future__ import annotations

from pathlib import Path

from test_sft_toy import addition, build_toy_model, split, write_dataset
from tiny import build_tiny_model

KD_ARGS = {"per_device_train_batch_size": 8, "learning_rate": 3e-3, "save_strategy": "no",
           "report_to": "none", "disable_tqdm": True, "logging_steps": 1,
           "gradient_checkpointing": False, "max_length": 96, "seed": 0}


def sharp_teacher(folder: Path, scale: float = 8.0, hidden: int = 64) -> Path:
    """A random toy model whose (tied) embeddings are scaled up: peaked, token-dependent
    next-token distributions, unlike a fresh model's near-uniform ones, so KD has signal."""
    build_toy_model(folder, hidden=hidden)
    return _sharpen(folder, scale)


def other_tokenizer_teacher(folder: Path, scale: float = 8.0) -> Path:
    """A sharp toy teacher whose tokenizer is not the student's: byte-level BPE of 360 tokens
    that keeps digits together (the student's splits them), so its completions are shorter."""
    corpus = [addition(a, b)["completion"] for a in range(10, 100, 5) for b in range(10, 100, 4)]
    corpus += ["system user assistant"] * 20
    build_tiny_model(folder, corpus=corpus, vocab_size=360, hidden=64, heads=4,
                     max_positions=256)
    return _sharpen(folder, scale)


def _sharpen(folder: Path, scale: float) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    model.save_pretrained(folder)
    return folder


def toy_pair(root: Path, n_train: int = 64, n_test: int = 16):
    """(dataset folder, held-out rows, student folder, teacher folder)."""
    train, test = split(n_train, n_test)
    data = write_dataset(root / "data", train)
    return data, test, build_toy_model(root / "student", hidden=32), sharp_teacher(root / "teacher")


def heldout_kl(student: Path, teacher: Path, rows: list[dict]) -> float:
    """Mean KL(teacher || student) per completion token of ``rows``, from full logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.sft.config import build_config
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
            total += float((p.exp() * (p - q)).sum())
            count += int((labels != -100).sum())
    return total / count
