"""Training throughput of ``distill train sft`` against a plain TRL ``SFTTrainer``.

Same rows, model, tokenizer and settings. The baseline gets the rows in TRL's own
prompt-completion conversational format (``prompt`` messages + assistant ``completion``), so
TRL tokenizes them itself; both runs then see the same token sequences, in the same order.
Each run is a fresh process; runs alternate; the median of ``--repeats`` is reported.
Throughput = TRL's count of trained tokens (non-padding) / ``train_runtime`` (the training
loop, without start-up and data preparation, which are shown separately as wall time).

    .venv/bin/python bench/sft.py                       # a small random Llama, SmolLM2 tokenizer
    .venv/bin/python bench/sft.py --model default --steps 10 --batch-size 4   # SmolLM2-135M
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BASELINE = r"""
import json, sys
from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer
from distill import io
from distill.chat import ensure_chat_template

model, data, out, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
rows = io.read_rows(data)
ds = Dataset.from_list([{"prompt": [{"role": m["role"], "content": m["content"]}
                                    for m in r["messages"]],
                         "completion": [{"role": "assistant", "content": r["completion"]}]}
                        for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model)
ensure_chat_template(tokenizer)
trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=out, **settings), train_dataset=ds,
                     processing_class=tokenizer)
result = trainer.train()
json.dump({"train_runtime": result.metrics["train_runtime"],
           "train_tokens": trainer._total_train_tokens,
           "train_loss": result.metrics["train_loss"]}, open(out + "/bench.json", "w"))
"""


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-like chain-of-thought rows: a word problem, worked steps, ``#### N``."""
    rng = random.Random(seed)
    names = ["Tom", "Maria", "Ali", "Chen", "Sara", "Ivan"]
    items = ["apples", "notebooks", "marbles", "stickers", "books"]
    rows = []
    for i in range(n):
        name, item = rng.choice(names), rng.choice(items)
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
        total = (a + b) * c
        steps = [f"{name} starts with {a} {item} and gets {b} more, so {a} + {b} = {a + b}."]
        steps += [f"Each of the {c} boxes holds that many, so {a + b} * {c} = {total}."]
        steps += ["Let me double check: " + " ".join(
            f"{k} * {a + b} = {k * (a + b)}." for k in range(1, rng.randint(2, 9)))]
        completion = " ".join(steps) + f"\n#### {total}"
        question = (f"{name} has {a} {item} and buys {b} more. {name} fills {c} boxes with "
                    f"that many {item} each. How many {item} are in the boxes?")
        rows.append({"id": f"q{i}", "messages": [
            {"role": "system", "content": "Solve the problem step by step."},
            {"role": "user", "content": question}], "completion": completion,
            "answer_span": [len(completion) - len(str(total)), len(completion)]})
    return rows


def small_model(folder: Path, tokenizer_dir: str, hidden: int, layers: int) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=hidden * 3, num_hidden_layers=layers,
                         num_attention_heads=max(hidden // 64, 1),
                         num_key_value_heads=max(hidden // 64, 1), max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run(kind: str, model: str, data: Path, out: Path, settings: dict, weights) -> dict:
    start = time.perf_counter()
    if kind == "trl":
        cmd = [sys.executable, "-c", BASELINE, model, str(data), str(out), json.dumps(settings)]
    else:
        cmd = [sys.executable, "-m", "distill.cli", "train", "sft", "--student", model, "--data",
               str(data), "--out", str(out), "--reasoning-weight", str(weights[0]),
               "--answer-weight", str(weights[1])]
        for k, v in settings.items():
            cmd += [f"--{k}", str(v)]
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr[-4000:]}")
    if kind == "trl":
        m = json.loads((out / "bench.json").read_text())
    else:
        m = json.loads((out / "metrics.json").read_text())
    return {"tokens": m["train_tokens"], "runtime": m["train_runtime"],
            "tps": m["train_tokens"] / m["train_runtime"], "loss": m["train_loss"], "wall": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small",
                   help="'small' (random Llama, SmolLM2 tokenizer), 'default' (SmolLM2-135M), "
                   "or an HF folder")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--packing", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()

    from distill import io
    from distill.models import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    model = resolve_model(None if args.model in ("default", "small") else args.model)
    if args.model == "small":
        model = small_model(tmp / "model", model, args.hidden, args.layers)
    rows = make_rows(args.rows)
    data = tmp / "data"
    import pyarrow as pa

    writer = io.ShardWriter(data, pa.Table.from_pylist(rows).schema)
    writer.write(rows)
    writer.close()
    io.write_manifest(data, {"kind": "bench", "rows": len(rows)})
    settings = {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                "learning_rate": 1e-4, "max_length": args.max_length, "logging_steps": 10,
                "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 0,
                "bf16": False, "gradient_checkpointing": args.gradient_checkpointing,
                "packing": args.packing}
    variants = {"trl": (1, 1), "distill": (1, 1), "distill --answer-weight 2": (1, 2)}
    results = {v: [] for v in variants}
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for v in order:
            kind = "trl" if v == "trl" else "distill"
            results[v].append(run(kind, model, data, tmp / f"{kind}-{r}-{len(results[v])}",
                                  settings, variants[v]))
            res = results[v][-1]
            print(f"  {v:<26} run {r}: {res['tps']:9.0f} tokens/s ({res['tokens']} tokens in "
                  f"{res['runtime']:.1f}s; wall {res['wall']:.1f}s)", file=sys.stderr, flush=True)
    base = statistics.median(x["tps"] for x in results["trl"])
    print(f"model {args.model} ({model}), {args.rows} rows, {args.steps} steps x batch "
          f"{args.batch_size}, max_length {args.max_length}, packing {args.packing}, "
          f"median of {args.repeats}")
    print(f"{'variant':<28}{'tokens/s':>10}{'ratio':>8}{'tokens':>9}{'wall s':>8}")
    for v, res in results.items():
        tps = statistics.median(x["tps"] for x in res)
        print(f"{v:<28}{tps:>10.0f}{tps / base:>8.3f}{res[0]['tokens']:>9}"
              f"{statistics.median(x['wall'] for x in res):>8.1f}")
    same = {res[0]["tokens"] for res in results.values()}
    print("same tokens trained in every variant: " + ("yes" if len(same) == 1 else f"NO {same}"))


if __name__ == "__main__":
    main()
