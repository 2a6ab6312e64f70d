"""Tokens/s of ``distill logits capture`` with the hf backend vs the vllm backend.

Both capture the teacher's top-k log-probs of the same training sequences (same rows, same
tokenizer and settings; the token counts are checked equal) into fresh folders. The vLLM
engine is started (and warmed up on a few rows) before the clock starts; the hf run's clock
includes loading the model (about a second for a 135M model). Prints tokens/s of each and the
ratio vllm / hf.

    .venv/bin/python bench/capture.py --rows 64
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=0-1 .venv/bin/python bench/capture.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from distill import io
from distill.models import resolve_model
from distill.sft.config import build_config
from distill.sft.kd.capture import capture_logits


def write_rows(folder: Path, n: int) -> Path:
    """``n`` GSM8K-like rows with worked completions of ~100-200 tokens."""
    rows = []
    for i in range(n):
        a, b, c = i + 3, i % 7 + 2, i % 5 + 1
        steps = " ".join(f"Step {k + 1}: {a} boxes hold {b} pens each, so after {k + 1} rounds "
                         f"there are {a * b * (k + 1)} pens." for k in range(c + 2))
        rows.append({"id": f"r{i}", "messages": [{"role": "user", "content":
                     f"A shop sells {a} boxes of {b} pens, {c + 2} times. How many pens?"}],
                     "completion": f"{steps}\n#### {a * b * (c + 2)}"})
    writer = io.ShardWriter(folder, None)
    writer.write(rows)
    writer.close()
    io.write_manifest(folder, {"kind": "generate", "created": io.now(), "rows": n})
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="hf sequences per forward")
    args = ap.parse_args()

    from distill.sft.kd.vllm_teacher import VLLMTeacher

    model = str(resolve_model(args.model))
    config = build_config(output_dir="unused", max_length=1024)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_rows(root / "data", args.rows)
        engine = VLLMTeacher(model, args.top_k, max_model_len=1024)
        try:
            warm = write_rows(root / "warm", 4)
            capture_logits(model, warm, root / "warm-out", args.top_k, config=config,
                           backend="vllm", engine=engine)
            vllm = capture_logits(model, data, root / "vllm", args.top_k, config=config,
                                  backend="vllm", engine=engine, shard_size=args.rows)
        finally:
            engine.close()
        hf = capture_logits(model, data, root / "hf", args.top_k, config=config,
                            batch_size=args.batch_size, shard_size=args.rows)
    assert hf.tokens == vllm.tokens, (hf.tokens, vllm.tokens)
    print(f"{args.rows} sequences, {hf.tokens} counted tokens, top-{args.top_k}, {model}")
    for name, r in (("hf", hf), ("vllm", vllm)):
        print(f"{name:5s} {r.seconds:7.2f}s  {r.tokens / r.seconds:9.1f} tokens/s")
    print(f"vllm / hf: {hf.seconds / vllm.seconds:.2f}x")


if __name__ == "__main__":
    main()
