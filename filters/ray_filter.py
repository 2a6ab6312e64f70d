"""``distill filter --executor ray``: the filter stages as Ray Data pipelines, keeping and
dropping the same rows, in the same order, as the local run.

Rows travel as ``_pos`` (their position in the input), ``_row`` (the row, pickled, so it
comes back exactly as it went) and ``_drop`` (the index of the stage that dropped it, or -1).
Workers read the input shards themselves. Each stage runs where its decisions need it:

* row by row (parse, verify, quality, decontaminate, execute, score): ``map_batches`` tasks;
  each worker process builds its own instances of a run of consecutive row-wise stages once;
* by problem (vote, pass_rate) or by question (agreement): rows are hash-partitioned by that
  key, so each group lands whole on one worker, which runs the stage over its groups;
* dedupe ``exact`` and ``minhash``: the distributed algorithm of ``ray_dedupe``;
* any other stage (dedupe ``semantic``): on the driver, over the rows still kept.

The driver gathers the result, sorts it by position and counts each stage's seen, kept,
dropped and reasons from it. A stage that ran on several workers gives one report per
worker, under ``workers``, where their reports differ; its seconds are summed over workers.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill import io
from distill.cluster import connect, resources, shuffle, worker_errors
from distill.filters.base import RowStage, Stage
from distill.filters.pipeline import Filtered, build_stages, log_stage
from distill.filters.ray_dedupe import drop_reason, duplicates_on_ray
from distill.filters.vote import problem_key, question_key

PER_ROW = ("execute", "score")  # Stage subclasses that decide each row on its own
GROUP_KEYS = {"vote": problem_key, "pass_rate": problem_key, "agreement": question_key}
BATCH_ROWS = 1024


def filter_on_ray(in_dir: Path, spec: list, pipeline: list[Stage], address: str | None,
                  workers: int | None) -> Filtered:
    """Run ``pipeline`` (built from ``spec``) over the dataset at ``in_dir`` on Ray, with
    ``workers`` tasks at a time per step (default: the cluster's CPUs)."""
    ray = connect(address)
    workers = workers or max(1, resources(ray)[0])
    tasks = {"compute": ray.data.TaskPoolStrategy(size=workers), "batch_format": "pyarrow"}
    board = ray.remote(num_cpus=0)(Board).remote()
    seconds = {}
    with worker_errors():
        shards = [{"shard": i, "path": str(p)} for i, p in enumerate(io.shard_paths(in_dir))]
        ds = ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
            _read_shard, batch_size=1, **tasks)
        for kind, first, stages in _runs(pipeline):
            args = (spec[first:first + len(stages)], first, board)
            if kind == "rows":
                ds = ds.map_batches(run_stages, fn_args=args, batch_size=BATCH_ROWS, **tasks)
            elif kind == "groups":
                ds = ray.data.from_arrow_refs(shuffle(
                    ray, ds.to_arrow_refs(), _group_keys, (stages[0].name,), ["_group"],
                    2 * workers, run_stages, args))
            else:
                blocks = ds.to_arrow_refs()  # runs the stages before this one
                start = time.perf_counter()
                ds = _on_driver(ray, blocks, stages[0], first) if kind == "driver" \
                    else _dedupe(ray, blocks, stages[0], first, 2 * workers)
                seconds[first] = time.perf_counter() - start
        table = _gather(ds)
    worked = ray.get(board.get.remote())
    ray.kill(board)
    rows = [pickle.loads(b) for b in table.column("_row").to_pylist()]
    drop = table.column("_drop").to_numpy()
    reports = []
    for i, stage in enumerate(pipeline):
        _count(stage, rows, drop, i)
        done = [v for (_, k), v in worked.items() if k == i]
        seconds[i] = sum(s for _, s in done) if done else seconds.get(i, 0.0)
        reports.append(_merged([r for r, _ in done]) if done else stage.report())
        log_stage(stage, stage.stats.kept, seconds[i])
    kept = [r for r, d in zip(rows, drop) if d == -1]
    dropped = [rows[j] for j in np.argsort(drop, kind="stable") if drop[j] >= 0]
    return Filtered(len(rows), kept, dropped, [seconds[i] for i in range(len(pipeline))],
                    reports)


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
        return _table(pa.array([], pa.int64()), [], np.zeros(0, np.int32))
    key = f"{first}:{pickle.dumps(spec).hex()}"
    if key not in _BUILT:
        _BUILT[key] = build_stages(spec), [0.0] * len(spec)
    stages, seconds = _BUILT[key]
    table = table.take(np.argsort(table.column("_pos").to_numpy(), kind="stable"))
    rows = [pickle.loads(b) for b in table.column("_row").to_pylist()]
    drop = table.column("_drop").to_numpy().copy()
    for k, stage in enumerate(stages):
        start = time.perf_counter()
        alive = np.flatnonzero(drop == -1)
        for i, (row, reason) in zip(alive, decide(stage, [rows[i] for i in alive])):
            rows[i] = row if reason is None else dropped_row(row, stage, reason)
            drop[i] = -1 if reason is None else first + k
        seconds[k] += time.perf_counter() - start
        ray.get(board.put.remote(f"{socket.gethostname()}:{os.getpid()}", first + k,
                                 stage.report(), seconds[k]))
    return _table(table.column("_pos"), rows, drop)


def decide(stage: Stage, rows: list[dict]) -> list[tuple[dict, str | None]]:
    """What the stage says of each row, as ``Stage.__call__`` asks it."""
    for row in rows:
        stage._require(row)
    return stage.select(rows)


def dropped_row(row: dict, stage: Stage, reason: str) -> dict:
    return {**row, "dropped_by": stage.name, "drop_reason": reason}


def _runs(pipeline: list[Stage]):
    """(kind, index of the first stage, stages) for each run of stages that execute alike."""
    runs: list[tuple[str, int, list[Stage]]] = []
    for i, stage in enumerate(pipeline):
        kind = _kind(stage)
        if kind == "rows" and runs and runs[-1][0] == "rows":
            runs[-1][2].append(stage)
        else:
            runs.append((kind, i, [stage]))
    return runs


def _kind(stage: Stage) -> str:
    if isinstance(stage, RowStage) or stage.name in PER_ROW:
        return "rows"
    if stage.name in GROUP_KEYS:
        return "groups"
    if stage.name == "dedupe" and stage.method in ("exact", "minhash"):
        return "dedupe"
    return "driver"


def _read_shard(table: pa.Table) -> pa.Table:
    shard, path = table.column("shard")[0].as_py(), table.column("path")[0].as_py()
    rows = pq.read_table(path).to_pylist()
    pos = pa.array((shard << 32) + np.arange(len(rows), dtype=np.int64))
    return _table(pos, rows, np.full(len(rows), -1, np.int32))


def _table(pos, rows: list[dict], drop: np.ndarray) -> pa.Table:
    return pa.table({"_pos": pos, "_row": pa.array([pickle.dumps(r) for r in rows], pa.binary()),
                     "_drop": pa.array(drop, pa.int32())})


def _group_keys(block: pa.Table, name: str) -> pa.Table:
    """The block with ``_group``: a hash of each row's group key (of its position, for rows
    dropped before, which only pass through)."""
    if not block.num_rows:  # an empty block may lack the columns too
        block = _table(pa.array([], pa.int64()), [], np.zeros(0, np.int32))
    key = GROUP_KEYS[name]
    groups = [hashlib.blake2b(repr(key(pickle.loads(b)) if d == -1 else p).encode(),
                              digest_size=8).digest()
              for b, d, p in zip(*(block.column(c).to_pylist() for c in ("_row", "_drop", "_pos")))]
    return block.append_column("_group", pa.array(np.frombuffer(b"".join(groups), np.uint64)))


def _dedupe(ray, blocks: list, stage, index: int, parts: int):
    drops = ray.put(duplicates_on_ray(ray, blocks, stage, parts))
    apply = ray.remote(_apply_drops)
    return ray.data.from_arrow_refs([apply.remote(b, drops, stage, index) for b in blocks])


def _apply_drops(block: pa.Table, drops: dict[int, str], stage, index: int) -> pa.Table:
    """Drop the block's duplicates, with ``duplicate_of``; only they are unpickled."""
    if not block.num_rows:
        return _table(pa.array([], pa.int64()), [], np.zeros(0, np.int32))
    blobs, reason = block.column("_row").to_pylist(), drop_reason(stage)
    drop = block.column("_drop").to_numpy().copy()
    for i, p in enumerate(block.column("_pos").to_pylist()):
        if p in drops:
            row = {**pickle.loads(blobs[i]), "duplicate_of": drops[p]}
            blobs[i], drop[i] = pickle.dumps(dropped_row(row, stage, reason)), index
    return pa.table({"_pos": block.column("_pos"), "_row": pa.array(blobs, pa.binary()),
                     "_drop": pa.array(drop, pa.int32())})


def _on_driver(ray, blocks: list, stage: Stage, index: int):
    """Run the stage here over the rows still kept, in input order."""
    table = _sorted(ray.get(blocks))
    rows = [pickle.loads(b) for b in table.column("_row").to_pylist()]
    drop = table.column("_drop").to_numpy().copy()
    alive = np.flatnonzero(drop == -1)
    for i, (row, reason) in zip(alive, decide(stage, [rows[i] for i in alive])):
        rows[i] = row if reason is None else dropped_row(row, stage, reason)
        drop[i] = -1 if reason is None else index
    return ray.data.from_arrow(_table(table.column("_pos"), rows, drop))


def _gather(ds) -> pa.Table:
    """The dataset's rows on the driver, in input order."""
    return _sorted(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))


def _sorted(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    table = pa.concat_tables(tables) if tables else \
        _table(pa.array([], pa.int64()), [], np.zeros(0, np.int32))
    return table.take(np.argsort(table.column("_pos").to_numpy(), kind="stable"))


def _count(stage: Stage, rows: list[dict], drop: np.ndarray, index: int) -> None:
    """Set the stage's seen, kept, dropped and reasons from where each row was dropped."""
    stats = stage.stats
    stats.seen = int(np.sum((drop == -1) | (drop >= index)))
    stats.dropped = int(np.sum(drop == index))
    stats.kept = stats.seen - stats.dropped
    stats.reasons = Counter(rows[j]["drop_reason"] for j in np.flatnonzero(drop == index))


def _merged(reports: list[dict]) -> dict:
    """The report of the one worker that ran the stage, else each worker's under ``workers``."""
    return reports[0] if len(reports) == 1 else {"workers": reports}
