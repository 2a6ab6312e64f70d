"""Throughput of the execute stage (sandboxed programs) vs a bare ``subprocess.run`` loop.

Runs N trivial programs (``print(6 * 7)``) through ``Execute`` (``workers`` threads, one
sandboxed subprocess each) and through a plain sequential ``subprocess.run([sys.executable,
"-c", ...])`` loop, and prints programs/s of each and their ratio (goal: >= 20 programs/s
on 2 cores). Also prints one sandboxed run at a time, for the per-program overhead.

    python bench/sandbox.py --programs 200
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from distill.filters.execute import Execute
from distill.sandbox import run_program, sandbox_info

CODE = "print(6 * 7)"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    ap.add_argument("--loop-programs", type=int, default=50, help="for the sequential loops")
    args = ap.parse_args()

    info = sandbox_info()  # probes once: not part of the timings
    stage = Execute(workers=args.workers, progress=False)
    rows = [{"id": str(i), "code": CODE, "answer": None} for i in range(args.programs)]
    stage_s = timed(lambda: stage.apply(rows))
    assert stage.stats.kept == args.programs and all(r["answer"] == "42" for r in rows)

    def bare():
        for _ in range(args.loop_programs):
            out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                                 check=True)
            assert out.stdout == "42\n"

    def one_at_a_time():
        for _ in range(args.loop_programs):
            assert run_program(CODE).stdout == "42\n"

    bare_s, seq_s = timed(bare), timed(one_at_a_time)
    stage_rate = args.programs / stage_s
    bare_rate, seq_rate = args.loop_programs / bare_s, args.loop_programs / seq_s
    print(f"sandbox: mode {info['mode']}, uid drop {info['drop_uid']}, python {info['python']}; "
          f"{os.cpu_count()} CPUs, {stage.workers} workers")
    print(f"execute stage       {args.programs:5d} programs  {stage_s:6.2f}s  "
          f"{stage_rate:6.1f} programs/s  (goal >= 20)")
    print(f"sandbox, sequential {args.loop_programs:5d} programs  {seq_s:6.2f}s  "
          f"{seq_rate:6.1f} programs/s  {1000 / seq_rate:5.1f} ms each")
    print(f"bare subprocess.run {args.loop_programs:5d} programs  {bare_s:6.2f}s  "
          f"{bare_rate:6.1f} programs/s  {1000 / bare_rate:5.1f} ms each")
    print(f"execute stage / bare loop: {stage_rate / bare_rate:.2f}x; "
          f"sandbox / bare, one at a time: {seq_rate / bare_rate:.2f}x")


if __name__ == "__main__":
    main()
