"""Scale-out: rows/s of ``distill filter`` (dedupe) and ``distill generate`` on the local
executor and on a Ray cluster with 1, then 2 workers, all on this machine.

The cluster is started here: a head node without CPUs (it only coordinates) and worker nodes
of 1 CPU each, as separate ``ray start`` processes on 127.0.0.1, whose workers run at the
driver's priority (Ray's default niceness of 15 would measure the machine's other load, not
Ray). The local baseline gets the same budget as one worker: 1 thread (torch) and 1 signature
thread (dedupe). Every figure is
end to end, as a user sees it: the filter reads the shards and writes kept, dropped and the
report; generate writes its shards; the Ray runs include starting their engines. Reported:
rows/s, the ray executor's overhead over local at 1 worker (goal <= 15%), and the speed-up
from 1 to 2 workers; for generate also once started: the rows/s between the first shard
written and the last, which leaves out start-up (imports, model loading, starting actors).

    .venv/bin/python bench/scale.py                          # 50k rows dedupe, 48 rows generate
    .venv/bin/python bench/scale.py --dedup-rows 200000 --gen-rows 96 --max-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dedup import make_rows  # bench/dedup.py: planted near-duplicates of known Jaccard

from distill import io
from distill.datagen import generate
from distill.filters import dedupe
from distill.filters.pipeline import run_filter

RAY = str(Path(sys.executable).with_name("ray"))
NICE_0 = dict(os.environ, RAY_worker_niceness="0")  # Ray's default, 15, loses to busy neighbours
DEDUPE = [{"dedupe": {"method": "exact"}}, {"dedupe": {"method": "minhash"}}]


class Cluster:
    """A head node with no CPUs and 1-CPU worker nodes, each a ``ray start --block`` group."""

    def __init__(self, temp: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{s.getsockname()[1]}"
        self.nodes = [self._start("--head", f"--port={self.address.split(':')[1]}",
                                  "--num-cpus=0", "--include-dashboard=false",
                                  f"--temp-dir={temp}", "--disable-usage-stats")]

    def _start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([RAY, "start", "--block", "--object-store-memory=500000000",
                                 *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=NICE_0)

    def add_worker(self, cpus: int) -> None:
        import ray

        self.nodes.append(self._start("--num-cpus=1", f"--address={self.address}"))
        while ray.cluster_resources().get("CPU", 0) < cpus:
            time.sleep(0.5)

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


def steady_rate(folder: Path) -> float:
    """Rows/s between the first shard written and the last: generation once the engines run,
    without start-up (imports, model loading, starting actors)."""
    shards = io.shard_paths(folder)
    times = [p.stat().st_mtime for p in shards]
    rows = sum(pq.read_metadata(p).num_rows for p in shards[1:])
    return rows / (max(times) - min(times))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dedup-rows", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=10, help="input shards of the dedupe set")
    ap.add_argument("--gen-rows", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    dedupe.WORKERS = 1
    tmp = Path(tempfile.mkdtemp(prefix="scale", dir="/tmp"))
    data = dedup_input(tmp / "dedup-in", args.dedup_rows, args.shards)
    config = tmp / "dedupe.yaml"
    config.write_text(json.dumps({"stages": DEDUPE}))
    source = tmp / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"A shop sells {i + 3} boxes of "
                                                      f"{i % 7 + 2} pens. How many pens?"}) + "\n"
                              for i in range(args.gen_rows)))

    def filter_run(name: str, **kw) -> float:
        return timed(lambda: run_filter(data, tmp / name, config=config, **kw))

    def generate_run(name: str, **kw) -> float:
        seconds = timed(lambda: generate(
            "gsm8k-cot", str(source), str(tmp / name), model=args.model, backend="hf",
            temperature=0, max_tokens=args.max_tokens, batch_size=args.batch_size,
            progress=False, **kw))
        steady[name] = steady_rate(tmp / name)
        return seconds

    steady: dict[str, float] = {}
    seconds = {("dedupe", "local"): filter_run("f-local"),
               ("generate", "local"): generate_run("g-local")}
    cluster = Cluster(str(tmp / "ray"))
    try:
        from distill.cluster import connect

        connect(cluster.address)
        for workers in (1, 2):
            cluster.add_worker(workers)
            ray = {"executor": "ray", "ray_address": cluster.address}
            seconds[("dedupe", workers)] = filter_run(f"f-ray{workers}", **ray)
            seconds[("generate", workers)] = generate_run(f"g-ray{workers}", **ray)
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
    same = all(io.read_rows(tmp / f"{w}-local" / p) == io.read_rows(tmp / f"{w}-ray{n}" / p)
               for w, p in (("f", "kept"), ("f", "dropped"), ("g", "")) for n in (1, 2))
    shutil.rmtree(tmp)

    print(f"\n{os.cpu_count()} CPU cores; dedupe (exact then minhash) on {args.dedup_rows} rows in "
          f"{args.shards} shards; generate {args.gen_rows} rows, hf backend, "
          f"{args.model or 'SmolLM2-135M-Instruct'}, greedy, max_tokens {args.max_tokens}, "
          f"batch {args.batch_size}; the ray datasets equal the local ones: {same}")
    print("| workload | local, 1 CPU | ray, 1 worker | ray, 2 workers | ray overhead at 1 "
          "(goal <= 15%) | 2 workers / 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for work, rows in (("dedupe", args.dedup_rows), ("generate", args.gen_rows)):
        rate = {k: rows / seconds[(work, k)] for k in ("local", 1, 2)}
        print(f"| {work} | {rate['local']:,.1f} rows/s | {rate[1]:,.1f} rows/s | "
              f"{rate[2]:,.1f} rows/s | {seconds[(work, 1)] / seconds[(work, 'local')] - 1:+.0%} "
              f"| {rate[2] / rate[1]:.2f}x |")
    rate = {k: steady[f"g-{k}"] for k in ("local", "ray1", "ray2")}
    print(f"| generate, once started | {rate['local']:.2f} rows/s | {rate['ray1']:.2f} rows/s | "
          f"{rate['ray2']:.2f} rows/s | {rate['local'] / rate['ray1'] - 1:+.0%} | "
          f"{rate['ray2'] / rate['ray1']:.2f}x |")


if __name__ == "__main__":
    main()
