"""Peak resident memory and rows/s of ``distill filter`` (parse, verify, quality, dedupe exact
and minhash) and of ``distill train sft``'s data preparation, on synthetic rows of ~1 KB
completions (a fifth of them exact or near copies, some wrong, truncated or looping).

    python bench/memory.py                      # 100k and 1M rows, both jobs
    python bench/memory.py --rows 2000 20000 --jobs filter

Each job runs in its own subprocess, under a small parent that waits for it and reads its peak
RSS with ``resource.getrusage(RUSAGE_CHILDREN)``, so one measurement never sees another's. It
prints one line per job and row count, then the growth of peak RSS from the fewest rows to the
most (the goal: under 2x from 100k to 1M rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARD_ROWS = 10_000
STAGES = {"stages": ["parse", "verify", "quality", {"dedupe": {"method": "exact"}},
                     {"dedupe": {"method": "minhash"}}]}
VOCAB = [f"w{i}" for i in range(20_000)] + ["the", "so", "and", "then", "we", "get", "is"]
WATCHED = ("import resource, subprocess, sys\n"
           "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def sentences(rng: np.random.Generator, count: int = 20_000) -> list[str]:
    """A pool of random 17-word sentences that completions are made of."""
    words = np.array(VOCAB, dtype=object)[rng.integers(0, len(VOCAB), (count, 17))]
    return [" ".join(w) + "." for w in words]


def synthetic_rows(n: int, seed: int = 0):
    """``n`` rows in the format ``distill generate`` writes, 4 samples per problem (which
    share a gold answer): mostly distinct texts (10 random sentences of a pool, then the
    answer line), 10% exact copies of a recent row (case and spacing changed), 10% near
    copies (one word changed), 10% wrong answers, 2% truncated, 2% looping."""
    rng = np.random.default_rng(seed)
    pool = sentences(rng)
    recent: list[tuple[str, int]] = []  # (completion, gold) of recent rows
    for i in range(n):
        if i % 4 == 0:
            problem = int(rng.integers(1, 1000))
        gold, roll = problem, rng.random()
        if recent and roll < 0.1:
            text, gold = recent[int(rng.integers(len(recent)))]
            text = text.upper().replace(" ", "  ", 3)
        elif recent and roll < 0.2:
            text, gold = recent[int(rng.integers(len(recent)))]
            words = text.split(" ")
            words[int(rng.integers(len(words) - 1))] = "changed"
            text = " ".join(words)
        elif roll > 0.98:
            text = "again and again " * 60 + f"#### {gold}"
        else:
            picked = rng.integers(0, len(pool), 10)
            text = "\n".join(pool[k] for k in picked) + f"\n#### {gold + (roll > 0.9)}"
        recent = (recent + [(text, gold)])[-50:]
        question = f"Problem {i // 4}: what is {gold}?"
        yield {"id": f"r{i}", "source_id": f"p{i // 4}", "sample_index": i % 4,
               "question": question, "gold": str(gold), "template": "gsm8k-cot", "kind": "cot",
               "task": None, "messages": [{"role": "user", "content": question}],
               "completion": text, "prompt_tokens": 12, "tokens": len(text) // 4,
               "finish_reason": "length" if 0.96 < roll <= 0.98 else "stop",
               "model": "teacher", "backend": "hf", "sampling": "{}", "source": "{}"}


def write_dataset(folder: Path, n: int) -> Path:
    """A dataset folder of ``n`` synthetic rows, in shards of SHARD_ROWS."""
    from distill import io
    from distill.datagen.plan import row_schema

    writer, rows = io.ShardWriter(folder, row_schema(False)), []
    for row in synthetic_rows(n):
        rows.append(row)
        if len(rows) == SHARD_ROWS:
            writer.write(rows)
            rows = []
    if rows:
        writer.write(rows)
    writer.close()
    io.write_manifest(folder, {"kind": "generate", "rows": n, "prompt": {"kind": "cot"}})
    return folder


def watched(command: list[str]) -> tuple[int, float]:
    """Run ``command`` under a fresh parent: (its peak RSS in bytes, seconds)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WATCHED, *command], check=False,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.split()[-1]) * 1024, time.perf_counter() - start


def filter_job(data: Path, work: Path) -> list[str]:
    config = work / "stages.json"
    config.write_text(json.dumps(STAGES))
    return [str(Path(sys.executable).parent / "distill"), "filter", "--data", str(data), "--out",
            str(work / "filtered"), "--config", str(config)]


SFT_PREP = """
import sys
from transformers import AutoTokenizer
from distill.sft.config import DistillSFTConfig
from distill.sft.data import build_examples, load_rows
rows, _, _ = load_rows(sys.argv[1])
config = DistillSFTConfig(output_dir=sys.argv[3], max_length=1024)
build_examples(rows, AutoTokenizer.from_pretrained(sys.argv[2]), config, verbose=False)
"""


def sft_job(data: Path, work: Path) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import build_tiny_model

    model = work.parent / "tokenizer"
    if not model.exists():
        corpus = [r["completion"] for r in synthetic_rows(3000, seed=1)]
        build_tiny_model(model, corpus=corpus, vocab_size=8000, layers=1, hidden=32)
    return [sys.executable, "-c", SFT_PREP, str(data), str(model), str(work / "run")]


JOBS = {"filter": filter_job, "sft": sft_job}


def measure(rows: list[int], jobs: list[str]) -> dict[str, list[tuple[int, int, float]]]:
    """For each job: (rows, peak RSS bytes, rows/s) at each row count."""
    results: dict[str, list] = {job: [] for job in jobs}
    with tempfile.TemporaryDirectory(prefix="distill-memory-") as tmp:
        for n in rows:
            data = write_dataset(Path(tmp) / f"data-{n}", n)
            for job in jobs:
                work = Path(tmp) / f"{job}-{n}"
                work.mkdir()
                rss, seconds = watched(JOBS[job](data, work))
                results[job].append((n, rss, n / seconds))
                print(f"{job:6s} {n:>9,} rows: peak RSS {rss / 2**20:8.0f} MiB "
                      f"({rss / n / 1024:.2f} KiB/row), {n / seconds:8.0f} rows/s", flush=True)
    for job, runs in results.items():
        if len(runs) > 1:
            print(f"{job}: peak RSS x{runs[-1][1] / runs[0][1]:.2f} from {runs[0][0]:,} to "
                  f"{runs[-1][0]:,} rows")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    args = parser.parse_args(argv)
    measure(sorted(args.rows), args.jobs)


if __name__ == "__main__":
    main()
