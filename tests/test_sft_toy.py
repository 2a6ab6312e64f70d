"""A tiny model learns a toy chain-of-thought task with ``distill train sft``.

The task: 2-digit addition, worked column by column, ending ``#### N`` (the GSM8K answer
format). The model is a small random Llama with a digit-level BPE tokenizer built here; the
dataset is a real distill dataset folder (parquet shards + manifest.json).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pyarrow as pa
from tiny import build_tiny_model

from distill import io


def addition(a: int, b: int) -> dict:
    """One row of the toy task: prompt messages, a worked completion, the answer's span."""
    ones = a % 10 + b % 10
    carry = ones // 10
    tens = a // 10 + b // 10 + carry
    completion = (f"{a % 10}+{b % 10}={ones}, write {ones % 10} carry {carry}. "
                  f"{a // 10}+{b // 10}+{carry}={tens}.\n#### {a + b}")
    answer = str(a + b)
    return {"id": f"{a}+{b}", "messages": [{"role": "user", "content": f"{a}+{b}"}],
            "completion": completion, "answer_span": [len(completion) - len(answer),
                                                      len(completion)],
            "gold": answer, "kind": "cot"}


def split(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(pairs)
    return ([addition(a, b) for a, b in pairs[:n_train]],
            [addition(a, b) for a, b in pairs[n_train:n_train + n_test]])


def write_dataset(folder: Path, rows: list[dict], manifest: dict | None = None) -> Path:
    """A distill dataset folder: data/part-00000.parquet + manifest.json."""
    table = pa.Table.from_pylist(rows)
    writer = io.ShardWriter(folder, table.schema)
    writer.write(rows)
    writer.close()
    io.write_manifest(folder, manifest or {
        "kind": "generate", "created": io.now(), "model": "toy-teacher",
        "prompt": {"name": "toy-addition", "sha256": "0" * 64, "kind": "cot"},
        "source": {"path": "tests/test_sft_toy.py"}, "rows": len(rows)})
    return folder


def build_toy_model(folder: Path, *, hidden: int = 128, layers: int = 2) -> Path:
    """A random Llama + a BPE tokenizer that splits digits, trained on the toy task's text."""
    corpus = [addition(a, b)["completion"] for a in range(10, 100, 7) for b in range(10, 100, 3)]
    corpus += ["system user assistant", "[label] [rationale]"] * 20
    return build_tiny_model(folder, corpus=corpus, vocab_size=120, hidden=hidden,
                            layers=layers, heads=4, split_digits=True, max_positions=256)


def greedy(model_dir: Path, rows: list[dict], max_new_tokens: int = 48) -> list[str]:
    """Greedy completions for rows' prompts, batched with left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [tokenizer.apply_chat_template(r["messages"], tokenize=False,
                                             add_generation_prompt=True) for r in rows]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


ANSWER = re.compile(r"#### (\d+)\s*$")


def test_tiny_model_learns_toy_cot(tmp_path):
    from distill.sft.train import train_sft

    train, test = split(2000, 24)
    data = write_dataset(tmp_path / "data", train)
    model = build_toy_model(tmp_path / "toy")
    start = time.perf_counter()
    result = train_sft(str(model), data, tmp_path / "student", max_steps=350,
                       per_device_train_batch_size=32, learning_rate=3e-3,
                       lr_scheduler_type="cosine", warmup_steps=20, logging_steps=25,
                       save_strategy="no", gradient_checkpointing=False, max_length=96,
                       answer_weight=2.0, report_to="none", disable_tqdm=True, seed=0)
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in __import__("json").loads(
        (tmp_path / "student" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] / 5, losses
    outputs = greedy(tmp_path / "student", test)
    answers = [ANSWER.search(o) for o in outputs]
    assert all(answers), outputs
    correct = sum(m.group(1) == r["gold"] for m, r in zip(answers, test))
    print(f"trained in {seconds:.1f}s, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"held-out correct {correct}/{len(test)}: {result.summary()}")
    assert correct >= 0.8 * len(test), list(zip(outputs, [r["gold"] for r in test]))
