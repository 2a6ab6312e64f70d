"""``distill filter --executor ray``: the filter stages as Ray Data pipelines, keeping and
dropping the same rows, in the same order, as the local run.

Rows travel as Arrow blocks (``blocks``), one per input shard, which workers read
themselves. Each stage runs where its declaration (``distill.filters.base``) says its
decisions need it:

* scope "row": ``map_batches`` tasks; each worker process builds its own instances of a run of
  consecutive row stages once;
* scope "group": rows are hash-partitioned by the stage's ``group_key``, so each group lands
  whole on one worker, which runs the stage over its groups;
* scope "dataset" with a ``distributed`` plan (dedupe ``exact`` and ``minhash``: ``dedupe``):
  that plan, a function ``(ray, blocks, stage, parts)`` that returns the rows to drop by
  position, each with its reason and the columns it adds;
* scope "dataset" without one (dedupe ``semantic``): on the driver, over the rows still kept.

The driver fetches the result one block at a time into spills on disk, merges them back into
input order and counts each stage's seen, kept, dropped and reasons from it as the rows come,
writing kept and dropped rows as it goes: it never holds the whole dataset. A stage that ran on several workers gives one report per
worker, under ``workers``, where their reports differ; its seconds are summed over workers.
"""

from __future__ import annotations

import hashlib
import heapq
import importlib
import os
import pickle
import socket
import time
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill import io
from distill.cluster import ray_data, resources, session, shuffle, worker_errors
from distill.filters.base import Filtered, Stage, Stats, log_stage
from distill.filters.pipeline import Spill, Spills
from distill.filters.ray.blocks import (
    by_position,
    empty,
    in_order,
    pickled,
    read_shard,
    replaced,
    rows_of,
)
from distill.filters.stages import build_stages


def filter_on_ray(in_dir: Path, spec: list, pipeline: list[Stage], address: str | None,
                  workers: int | None, work: Path) -> Filtered:
    """Run ``pipeline`` (built from ``spec``) over the dataset at ``in_dir`` on Ray, with
    ``workers`` tasks at a time per step (default: the cluster's CPUs); kept and dropped rows
    wait in spills of ``work``."""
    with session(address) as ray, worker_errors():
        workers, plan = workers or max(1, resources(ray)[0]), steps(pipeline)
        board = ray.remote(num_cpus=0)(Board).remote() if any(
            kind in ("rows", "groups") for kind, _, _ in plan) else None
        read, seconds = ray.remote(read_shard), {}
        blocks = [read.remote(i, str(p)) for i, p in enumerate(io.shard_paths(in_dir))]
        for kind, first, stages in plan:
            args = (spec[first:first + len(stages)], first, board)
            start = time.perf_counter()
            if kind == "rows":
                blocks = ray_data(ray).from_arrow_refs(blocks).map_batches(
                    run_stages, fn_args=args, batch_size=None, batch_format="pyarrow",
                    compute=ray.data.TaskPoolStrategy(size=workers)).to_arrow_refs()
            elif kind == "groups":
                blocks = shuffle(ray, blocks, group_hashes, (stages[0].group_key,), ["_group"],
                                 2 * workers, run_stages, args)
            elif kind == "distributed":
                blocks = _distributed(ray, blocks, stages[0], first, 2 * workers)
            else:
                blocks = [ray.put(_on_driver(ray, blocks, stages[0], first))]
            seconds[first] = time.perf_counter() - start
        rows_in, kept, dropped = _written(ray, blocks, pipeline, work)
        worked = ray.get(board.get.remote()) if board else {}
        if board:
            ray.kill(board)
    reports = []
    for i, stage in enumerate(pipeline):
        done = [v for (_, k), v in worked.items() if k == i]
        seconds[i] = sum(s for _, s in done) if done else seconds.get(i, 0.0)
        reports.append(_merged([r for r, _ in done]) if done else stage.report())
        log_stage(stage, stage.stats.kept, seconds[i])
    return Filtered(rows_in, kept, Spills(dropped), [seconds[i] for i in range(len(pipeline))],
                    reports)


def _written(ray, blocks: list, pipeline: list[Stage], work: Path) -> tuple[int, Spill,
                                                                            list[Spill]]:
    """Fetch the result blocks one at a time into spills sorted by position, merge them into
    input order, and count each stage's rows while writing them to the kept spill or to the
    dropped spill of the stage that dropped them: (rows in, kept, dropped by stage)."""
    parts = []
    for ref in blocks:
        block = ray.get(ref)
        if block.num_rows:
            block = by_position(block)
            records = list(zip(block.column("_pos").to_pylist(),
                               block.column("_drop").to_pylist(), rows_of(block)))
            parts.append(Spill(work))
            for at in range(0, len(records), 256):
                parts[-1].write(records[at:at + 256])
        del block
    for stage in pipeline:
        stage.stats = Stats()
    kept, dropped, out, rows_in = Spill(work), [Spill(work) for _ in pipeline], [], 0
    for _, drop, row in heapq.merge(*parts, key=itemgetter(0)):
        rows_in += 1
        for i, stage in enumerate(pipeline[:len(pipeline) if drop == -1 else drop + 1]):
            stage.stats.seen += 1
            if i == drop:
                stage.stats.dropped += 1
                stage.stats.reasons[row["drop_reason"]] += 1
            else:
                stage.stats.kept += 1
        out.append((drop, row))
        if len(out) == 2000:
            _spill(out, kept, dropped)
    _spill(out, kept, dropped)
    return rows_in, kept, dropped


def _spill(rows: list[tuple[int, dict]], kept: Spill, dropped: list[Spill]) -> None:
    """Write (where dropped, row) pairs to the kept or the stage's dropped spill; empty them."""
    kept.write([row for drop, row in rows if drop == -1])
    for i, spill in enumerate(dropped):
        spill.write([row for drop, row in rows if drop == i])
    rows.clear()


class Board:
    """A Ray actor that keeps each worker's latest report and seconds for each stage."""

    def __init__(self):
        self.latest: dict[tuple[str, int], tuple[dict, float]] = {}

    def put(self, worker: str, index: int, report: dict, seconds: float) -> None:
        self.latest[(worker, index)] = (report, seconds)

    def get(self) -> dict[tuple[str, int], tuple[dict, float]]:
        return self.latest


_BUILT: dict[str, tuple[list[Stage], list[float]]] = {}  # per worker process: stages, seconds


def run_stages(table: pa.Table, spec: list, first: int, board) -> pa.Table:
    """Run the pipeline's stages ``first``, ``first + 1``, ... over a batch, in order, on the
    rows no earlier stage dropped, in input order. Each worker process builds the stages once
    and keeps them (and their counts) for every batch it is given."""
    import ray

    if not table.num_rows:  # an empty block may lack the columns too
        return empty()
    key = f"{first}:{pickle.dumps(spec).hex()}"
    if key not in _BUILT:
        _BUILT[key] = build_stages(spec), [0.0] * len(spec)
    stages, seconds = _BUILT[key]
    table = by_position(table)
    rows, drop = rows_of(table), table.column("_drop").to_numpy().copy()
    for k, stage in enumerate(stages):
        start = time.perf_counter()
        apply(stage, rows, drop, first + k)
        seconds[k] += time.perf_counter() - start
        ray.get(board.put.remote(f"{socket.gethostname()}:{os.getpid()}", first + k,
                                 stage.report(), seconds[k]))
    return pickled(table.column("_pos"), rows, drop)


def apply(stage: Stage, rows: list[dict], drop: np.ndarray, index: int) -> None:
    """Run stage number ``index`` over the rows no earlier stage dropped (``Stage.decide``);
    the rows it drops get its name and reason, and ``index`` in ``drop``."""
    alive = np.flatnonzero(drop == -1)
    for i, (row, reason) in zip(alive, stage.decide([rows[i] for i in alive])):
        rows[i], drop[i] = row, -1 if reason is None else index


def steps(pipeline: list[Stage]) -> list[tuple[str, int, list[Stage]]]:
    """(kind, index of the first stage, stages) for each run of stages that execute alike, from
    what each stage declares: "rows", "groups", "distributed" or "driver"."""
    runs: list[tuple[str, int, list[Stage]]] = []
    for i, stage in enumerate(pipeline):
        kind = {"row": "rows", "group": "groups"}.get(stage.scope) or (
            "distributed" if stage.distributed else "driver")
        if kind == "rows" and runs and runs[-1][0] == "rows":
            runs[-1][2].append(stage)
        else:
            runs.append((kind, i, [stage]))
    return runs


def group_hashes(block: pa.Table, key) -> pa.Table:
    """The block with ``_group``: a hash of each row's ``key(row)`` (of its position, for rows
    dropped before, which only pass through)."""
    if not block.num_rows:  # an empty block may lack the columns too
        block = empty()
    groups = [hashlib.blake2b(repr(key(r) if d == -1 else p).encode(), digest_size=8).digest()
              for r, d, p in zip(rows_of(block), *(block.column(c).to_pylist()
                                                   for c in ("_drop", "_pos")))]
    return block.append_column("_group", pa.array(np.frombuffer(b"".join(groups), np.uint64)))


def _distributed(ray, blocks: list, stage: Stage, index: int, parts: int) -> list:
    """Run the stage's distributed plan (``stage.distributed``: "module:function")."""
    module, function = stage.distributed.split(":")
    drops = ray.put(getattr(importlib.import_module(module), function)(ray, blocks, stage, parts))
    apply = ray.remote(_apply_drops)
    return [apply.remote(b, drops, stage, index) for b in blocks]


def _apply_drops(block: pa.Table, drops: dict[int, tuple[str, dict]], stage: Stage,
                 index: int) -> pa.Table:
    """Drop the block's rows in ``drops``, with their reason and added columns; only they are
    turned into dicts."""
    pos = block.column("_pos").to_numpy() if block.num_rows else np.zeros(0, np.int64)
    at = np.flatnonzero(np.isin(pos, np.fromiter(drops, np.int64, len(drops))))
    if not len(at):
        return block
    drop = block.column("_drop").to_numpy().copy()
    drop[at] = index
    rows = [stage.dropped_row({**row, **drops[p][1]}, drops[p][0])
            for row, p in zip(rows_of(block.take(at)), pos[at].tolist())]
    return replaced(block, at, rows, drop)


def _on_driver(ray, blocks: list, stage: Stage, index: int) -> pa.Table:
    """Run the stage here over the rows still kept, in input order."""
    tables = ray.get(blocks)
    rows, drop = in_order(tables)
    pos = np.concatenate([np.zeros(0, np.int64), *(t.column("_pos").to_numpy() for t in tables)])
    apply(stage, rows, drop, index)
    return pickled(np.sort(pos), rows, drop)


def _merged(reports: list[dict]) -> dict:
    """The report of the one worker that ran the stage, else each worker's under ``workers``."""
    return reports[0] if len(reports) == 1 else {"workers": reports}
