"""Scale-out: rows/s of ``distill filter`` (dedupe) and ``distill generate`` on the local
executor and on Ray clusters of 1 and 2 workers, all on this machine.

Two clusters are started here, each a head node without CPUs (it only coordinates) plus 1 or
2 worker nodes of 1 CPU, as separate ``ray start`` processes on 127.0.0.1. Their workers run
at the driver's priority (Ray's default niceness, 15, would measure the machine's other load,
not Ray). The local baseline gets the budget of one worker: it is pinned to one core with
``taskset`` and runs torch on one thread.

Every run is the ``distill`` command in a fresh process, timed end to end as a user sees it:
start-up, reading, the work, writing (the filter: kept, dropped and the report; generate: its
shards; on Ray also starting the engines). Runs alternate local, 1 worker, 2 workers, for
``--rounds`` rounds; the median is reported, with the ray executor's overhead over local at 1
worker (goal <= 15%) and the speed-up from 1 to 2 workers.

    .venv/bin/python bench/scale.py                # 50k rows dedupe, 32 rows generate, 3 rounds
    .venv/bin/python bench/scale.py --dedup-rows 200000 --gen-rows 64 --max-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from dedup import make_rows  # bench/dedup.py: planted near-duplicates of known Jaccard

from distill import io

RAY = str(Path(sys.executable).with_name("ray"))
DEDUPE = [{"dedupe": {"method": "exact"}}, {"dedupe": {"method": "minhash"}}]
ENV = dict(os.environ, RAY_worker_niceness="0", OMP_NUM_THREADS="1",
           TOKENIZERS_PARALLELISM="false")


class Cluster:
    """A head node with no CPUs and ``workers`` 1-CPU worker nodes, each a process group."""

    def __init__(self, temp: Path, workers: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.nodes = [self._start("--head", f"--port={port}", "--num-cpus=0",
                                  "--include-dashboard=false", f"--temp-dir={temp}",
                                  "--disable-usage-stats")]
        for n in range(1, workers + 1):  # one at a time: nodes started together may collide
            self.nodes.append(self._start("--num-cpus=1", f"--address={self.address}"))
            wait = f"""import ray, time
ray.init(address="{self.address}")
while ray.cluster_resources().get("CPU", 0) < {n}:
    time.sleep(0.5)"""
            subprocess.run([sys.executable, "-c", wait], check=True, timeout=300, env=ENV,
                           capture_output=True)

    def _start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([RAY, "start", "--block", "--object-store-memory=1500000000",
                                 *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=ENV)

    def stop(self) -> None:
        for node in self.nodes:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def dedup_input(folder: Path, rows: int, shards: int) -> Path:
    data = make_rows(rows, rows // 10, seed=0)[0]
    writer = io.ShardWriter(folder, pa.Table.from_pylist(data[:1]).schema)
    size = -(-rows // shards)
    for i in range(0, rows, size):
        writer.write(data[i:i + size])
    writer.close()
    io.write_manifest(folder, {"kind": "generate", "prompt": {"kind": "cot"}})
    return folder


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dedup-rows", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=10, help="input shards of the dedupe set")
    ap.add_argument("--gen-rows", type=int, default=32, help="0: no generate runs")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="scale", dir="/tmp"))
    data = dedup_input(tmp / "dedup-in", args.dedup_rows, args.shards)
    config = tmp / "dedupe.yaml"
    config.write_text(json.dumps({"stages": DEDUPE}))
    source = tmp / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"A shop sells {i + 3} boxes of "
                                                      f"{i % 7 + 2} pens. How many pens?"}) + "\n"
                              for i in range(args.gen_rows)))
    clusters = {n: Cluster(tmp / f"ray{n}", n) for n in (1, 2)}
    distill = [sys.executable, "-m", "distill.cli"]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    model = ["--teacher", args.model] if args.model else []
    seconds: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(args.rounds):
            for where in ("local", 1, 2):
                name = f"{where}-{r}"
                ray = ["--executor", "ray", "--ray-address", clusters[where].address] \
                    if where != "local" else []
                prefix = pin if where == "local" else []
                seconds.setdefault(("dedupe", where), []).append(timed(
                    [*prefix, *distill, "filter", "--data", str(data),
                     "--out", str(tmp / f"f-{name}"),
                     "--config", str(config), *ray]))
                if args.gen_rows:
                    seconds.setdefault(("generate", where), []).append(timed(
                        [*prefix, *distill, "generate", "--prompt", "gsm8k-cot", "--data",
                         str(source), "--out", str(tmp / f"g-{name}"), "--backend", "hf",
                         *model, "--temperature", "0", "--max-tokens", str(args.max_tokens),
                         "--batch-size", str(args.batch_size), "--no-progress", *ray]))
                print(f"round {r} {where}: " + ", ".join(
                    f"{work} {s[-1]:.1f} s" for (work, w), s in seconds.items() if w == where),
                    flush=True)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    last = args.rounds - 1
    same = all(io.read_rows(tmp / f"{w}-local-{last}" / p) == io.read_rows(
        tmp / f"{w}-{n}-{last}" / p) for w, p in (("f", "kept"), ("f", "dropped"), ("g", ""))
        for n in (1, 2) if w == "f" or args.gen_rows)
    shutil.rmtree(tmp)

    print(f"\n{os.cpu_count()} CPU cores; dedupe (exact then minhash) on {args.dedup_rows} rows in "
          f"{args.shards} shards; generate {args.gen_rows} rows, hf backend, "
          f"{args.model or 'SmolLM2-135M-Instruct'}, greedy, max_tokens {args.max_tokens}, "
          f"batch {args.batch_size}; median of {args.rounds} alternating rounds; the ray "
          f"datasets equal the local ones: {same}")
    print("| workload | local, 1 CPU | ray, 1 worker | ray, 2 workers | ray overhead at 1 "
          "(goal <= 15%) | 2 workers / 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for work, rows in (("dedupe", args.dedup_rows), ("generate", args.gen_rows)):
        if not rows:
            continue
        secs = {k: statistics.median(seconds[(work, k)]) for k in ("local", 1, 2)}
        rate = {k: rows / s for k, s in secs.items()}
        print(f"| {work} | {rate['local']:,.1f} rows/s | {rate[1]:,.1f} rows/s | "
              f"{rate[2]:,.1f} rows/s | {secs[1] / secs['local'] - 1:+.0%} | "
              f"{rate[2] / rate[1]:.2f}x |")


if __name__ == "__main__":
    main()
