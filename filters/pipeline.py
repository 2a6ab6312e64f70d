"""Run filter stages in order over a dataset folder; write kept rows, dropped rows (with
``dropped_by`` and ``drop_reason``) and a funnel report.

Rows stream through in batches of ``BATCH_ROWS``, so memory does not grow with the dataset:

* a run of "row" stages takes one batch at a time through all of its stages;
* a "group" stage numbers the groups in order of first appearance, partitions the rows on disk
  into buckets of whole groups (``BUCKET_ROWS`` rows or so), decides one bucket at a time, group
  by group in that order, and merges the buckets back into input order;
* a "dataset" stage with ``drops`` (dedupe) holds only what it compares, then one more pass
  applies its decisions; any other "dataset" stage is given all of its rows at once.

Between stages rows wait on disk, pickled, so each reaches the next stage exactly as the last
left it. Kept rows come out in input order, dropped rows stage by stage (each stage's in input
order), with the same counts and reports as one pass over all rows in memory (``filter_rows``).
"""

from __future__ import annotations

import heapq
import os
import pickle
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby, islice
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from distill import io
from distill.data import Data, conversations, detect_format, read
from distill.errors import DistillError
from distill.filters.base import Filtered, Stage, log_stage
from distill.filters.stages import build_stages, stage_class
from distill.folders import claim

SHARD_ROWS = 10_000  # rows per output shard
BATCH_ROWS = 2_000  # rows a stage is given at a time
BUCKET_ROWS = 10_000  # rows a group stage holds at a time (whole groups, so about)
TABLE_ROWS = 1_000  # rows turned into Arrow at a time on the way out


def load_filter_config(path: str | Path) -> list:
    """The ``stages`` list of a filter YAML file (a shipped preset name or a path; a name is
    the preset even where a folder of that name is in the working directory)."""
    p = Path(path)
    if not p.is_file():
        shipped = Path(__file__).parent / f"{path}.yaml"
        if not shipped.exists():
            raise DistillError(f"filter config {str(path)!r} not found; presets: "
                               + ", ".join(x.stem for x in Path(__file__).parent.glob("*.yaml")))
        p = shipped
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DistillError(f"{p}{f':{mark.line + 1}' if mark else ''}: invalid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        raise DistillError(f"{p}: a filter config is a mapping with a 'stages' list")
    return data["stages"]


def pick_stages(spec: list, names: list[str]) -> list:
    """The named stages in the given order, with their options from ``spec`` where it has
    them (every entry of that name), else default options."""
    picked = []
    for name in names:
        stage_class(name)
        found = [e for e in spec if (e if isinstance(e, str) else next(iter(e))) == name]
        picked += found or [name]
    return picked


@dataclass
class FilterResult:
    out: Path
    rows_in: int
    kept: int
    dropped: int
    stages: list[dict]


def run_filter(in_dir: str | Path, out_dir: str | Path, *, config: str | Path | None = None,
               stages: list[str] | None = None, executor: str = "local",
               ray_address: str | None = None, ray_workers: int | None = None,
               data_options: dict | None = None, overwrite: bool = False) -> FilterResult:
    """Filter the data at ``in_dir`` (anything ``distill.data.read`` takes, with
    ``data_options``: its split, subset, revision and fields; a conversational format is
    mapped to distill's row, other columns are left to the stages that need them) into
    ``out_dir/kept``, ``out_dir/dropped`` and the report. ``config`` is a filter YAML file or
    preset name (default: the preset for the input's prompt kind: cot, pot, instruction or problem);
    ``stages`` picks and orders stages.
    ``executor="ray"`` runs them as Ray Data pipelines on ``ray_workers`` workers of the
    cluster at ``ray_address`` (``distill.filters.ray``), keeping and dropping the same rows.
    ``out_dir`` must be new, empty or a filter output (``overwrite``: move what else it holds
    aside), and never the input or inside it."""
    if executor not in ("local", "ray"):
        raise DistillError(f"executor must be local or ray, not {executor!r}")
    out_dir = Path(out_dir)
    source = read(in_dir, **(data_options or {}))
    if detect_format(source.dataset.column_names, source.dataset.features) != "question":
        source = conversations(source, required=False)  # question + completion: as they are
    with claim(out_dir, "filter", "filter", marker="kept/manifest.json",
               inputs=[in_dir, source.folder, *source.files], overwrite=overwrite):
        return _filter(source, in_dir, out_dir, config, stages, executor, ray_address,
                       ray_workers, data_options)


def _filter(source: Data, in_dir, out_dir: Path, config, stages, executor, ray_address,
            ray_workers, data_options) -> FilterResult:
    from distill.filters.report import write_report

    manifest = source.manifest
    preset = ((manifest or {}).get("prompt") or {}).get("kind", "cot")
    spec = load_filter_config(config or (preset if preset in ("pot", "instruction", "problem")
                                          else "cot"))
    if stages is not None:
        spec = pick_stages(spec, stages)
    pipeline = build_stages(spec, f"{config or preset}: stages")
    rows = InputRows(source)
    kept_schema, dropped_schema = output_schemas(rows.schema, pipeline)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".filter-", dir=out_dir) as work:
        if executor == "ray":
            from distill.filters.ray.filter import filter_on_ray

            if source.kind not in ("dataset", "filter output") or (data_options or {}).get(
                    "fields"):
                raise DistillError(f"{in_dir}: --executor ray reads a distill dataset folder "
                                   "(data/part-*.parquet) as it is; filter this data locally")
            run = filter_on_ray(source.folder, spec, pipeline, ray_address, ray_workers,
                                Path(work))
        else:
            run = stream_rows(rows, pipeline, Path(work))
        summary = [{"stage": s.name, "options": s.options, **s.stats.to_dict(),
                    "seconds": round(t, 3), **r}
                   for s, t, r in zip(pipeline, run.seconds, run.reports)]
        lineage = {"kind": "filter", "created": io.now(), "input": str(in_dir),
                   "input_manifest": manifest, "stages": summary,
                   "versions": io.package_versions()}
        write_rows(out_dir / "kept", run.kept, {**lineage, "rows": len(run.kept)}, kept_schema)
        write_rows(out_dir / "dropped", run.dropped, {**lineage, "rows": len(run.dropped)},
                   dropped_schema)
        write_report(out_dir, run.rows_in, summary, run.dropped)
    return FilterResult(out_dir, run.rows_in, len(run.kept), len(run.dropped), summary)


class InputRows:
    """The input's rows in batches of at most ``BATCH_ROWS`` (the one place the filter reads
    its input). The reader's Arrow files are read, not memory-mapped, so the pages of rows
    already filtered are freed, not held as resident memory."""

    def __init__(self, data: Data):
        self.dataset = data.dataset
        self.schema = data.dataset.features.arrow_schema

    def batches(self) -> Iterator[list[dict]]:
        files = [f["filename"] for f in self.dataset.cache_files]
        if not files or self.dataset._indices is not None:  # in memory, or a selection of rows
            for table in self.dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
                yield table.to_pylist()
            return
        for path in files:
            with pa.OSFile(path) as f:
                for batch in pa.ipc.open_stream(f):
                    for start in range(0, batch.num_rows, BATCH_ROWS):
                        yield batch.slice(start, BATCH_ROWS).to_pylist()


class Spill:
    """Rows pickled batch by batch into a file of ``folder``, read back in order as often as
    needed (the end of writing is the first read)."""

    def __init__(self, folder: Path):
        fd, self.path = tempfile.mkstemp(suffix=".pkl", dir=folder)
        self.file = os.fdopen(fd, "wb")
        self.rows = 0

    def write(self, rows: list) -> None:
        if rows:
            pickle.dump(rows, self.file, pickle.HIGHEST_PROTOCOL)
            self.rows += len(rows)

    def batches(self) -> Iterator[list]:
        self.file.close()
        with open(self.path, "rb") as f:
            while True:
                try:
                    yield pickle.load(f)
                except EOFError:
                    return

    def __iter__(self) -> Iterator:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return self.rows


class Spills:
    """Spills one after the other, as one sequence of rows."""

    def __init__(self, spills: list[Spill]):
        self.spills = spills

    def __iter__(self) -> Iterator[dict]:
        for spill in self.spills:
            yield from spill

    def __len__(self) -> int:
        return sum(len(s) for s in self.spills)


def stream_rows(source, pipeline: list[Stage], work: Path) -> Filtered:
    """Run the stages over ``source.batches()`` in bounded memory (see the module docstring);
    kept and dropped rows wait in spills of ``work``."""
    stream, dropped = source, [Spill(work) for _ in pipeline]
    if not pipeline:  # the input is the kept set
        stream = Spill(work)
        for batch in source.batches():
            stream.write(batch)
    seconds = [0.0] * len(pipeline)
    try:
        i = 0
        while i < len(pipeline):
            scope = pipeline[i].scope
            end = i + 1
            while scope == "row" and end < len(pipeline) and pipeline[end].scope == "row":
                end += 1
            out = Spill(work)
            if scope == "row":
                for batch in stream.batches():
                    for k in range(i, end):
                        start = time.perf_counter()
                        batch, out_k = pipeline[k].apply(batch)
                        seconds[k] += time.perf_counter() - start
                        dropped[k].write(out_k)
                    out.write(batch)
            else:
                start = time.perf_counter()
                run = _group_stage if scope == "group" else _dataset_stage
                run(stream, pipeline[i], out, dropped[i], work)
                seconds[i] = time.perf_counter() - start
            for k in range(i, end):
                log_stage(pipeline[k], pipeline[k].stats.kept, seconds[k])
            stream, i = out, end
    finally:
        for stage in pipeline:
            stage.close()
    rows_in = pipeline[0].stats.seen if pipeline else len(stream)
    return Filtered(rows_in, stream, Spills(dropped), seconds,
                    [s.report() for s in pipeline])


def _group_stage(source, stage: Stage, kept: Spill, dropped: Spill, work: Path) -> None:
    """Number the groups by first appearance, partition the rows into buckets of whole groups
    (consecutive group numbers), decide each bucket group by group, and merge the buckets back
    into input order, counting there."""
    numbers: dict = {}
    group = []
    for batch in source.batches():
        for row in batch:
            stage.require(row)
            group.append(numbers.setdefault(stage.group_key(row), len(numbers)))
    buckets = max(1, -(-len(group) // BUCKET_ROWS))
    group = np.array(group, np.int64)
    bucket = (group * buckets // max(len(numbers), 1)).tolist()
    del numbers
    parts, pos = [Spill(work) for _ in range(buckets)], 0
    for batch in source.batches():
        split = defaultdict(list)
        for row in batch:
            split[bucket[pos]].append((pos, row))
            pos += 1
        for b, records in split.items():
            parts[b].write(records)
    decided = []
    for part in parts:
        records = sorted((r for b in part.batches() for r in b), key=lambda r: group[r[0]])
        os.remove(part.path)
        out = []
        for _, members in groupby(records, key=lambda r: group[r[0]]):
            members = list(members)
            out += [(p, *d) for (p, _), d in zip(members, stage.decide([r for _, r in members]))]
        out.sort(key=itemgetter(0))
        decided.append(Spill(work))
        for at in range(0, len(out), 256):
            decided[-1].write(out[at:at + 256])
    merged = heapq.merge(*decided, key=itemgetter(0))
    while chunk := list(islice(merged, BATCH_ROWS)):
        k, d = stage.tally((row, reason) for _, row, reason in chunk)
        kept.write(k)
        dropped.write(d)


def _dataset_stage(source, stage: Stage, kept: Spill, dropped: Spill, work: Path) -> None:
    """Run a stage that needs every row: by its ``drops`` where it has them, else over all the
    rows at once."""
    if not hasattr(stage, "drops"):
        k, d = stage.apply([row for batch in source.batches() for row in batch])
        kept.write(k)
        dropped.write(d)
        return
    drops, pos = stage.drops(source.batches), 0
    for batch in source.batches():
        decisions = []
        for row in batch:
            hit = drops.get(pos)
            pos += 1
            decisions.append((row, None) if hit is None else
                             (stage.dropped_row({**row, **hit[1]}, hit[0]), hit[0]))
        k, d = stage.tally(decisions)
        kept.write(k)
        dropped.write(d)


def output_schemas(schema: pa.Schema, pipeline: list[Stage]) -> tuple[pa.Schema, pa.Schema]:
    """The schemas of an empty kept and dropped set: the input's columns, then those the stages
    add (of unknown type: null), then on the dropped side ``dropped_by`` and ``drop_reason``."""
    def extended(names):
        fields = list(schema)
        for name in dict.fromkeys(names):
            if name not in schema.names:
                fields.append(pa.field(name, pa.null()))
        return pa.schema(fields)

    adds = [c for s in pipeline for c in s.adds]
    return extended(adds), extended(adds + [c for s in pipeline for c in s.adds_when_dropped]
                                    + ["dropped_by", "drop_reason"])


def filter_rows(rows: list[dict], pipeline: list[Stage]) -> Filtered:
    """Run the stages here, in order, each over the rows the ones before it kept."""
    kept, dropped, timings = rows, [], []
    for stage in pipeline:
        start = time.perf_counter()
        kept, out = stage.apply(kept)
        dropped += out
        timings.append(time.perf_counter() - start)
        log_stage(stage, len(kept), timings[-1])
    return Filtered(len(rows), kept, dropped, timings, [s.report() for s in pipeline])


def write_rows(folder: Path, rows: Iterable[dict], manifest: dict,
               schema: pa.Schema | None = None) -> None:
    """Write rows as the dataset of ``folder`` (a folder filter owns), in ``SHARD_ROWS``-row
    shards: the shards it wrote there before are replaced, nothing else is touched. The columns are those the rows have, in order of first appearance,
    each with one type in every shard; with no rows, one empty shard of ``schema`` (default:
    an ``id`` column), which ``datasets.load_dataset`` reads as 0 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    io.remove_shards(folder)
    with tempfile.TemporaryDirectory(prefix=".rows-", dir=folder) as work:
        parts, schemas, rows = [], [], iter(rows)
        while table := _table(rows):  # each shard's types, then one type for all
            parts.append(Path(work) / f"{len(parts)}.arrow")
            with pa.ipc.new_file(parts[-1], table.schema) as f:
                f.write_table(table)
            schemas.append(table.schema)
        if schemas:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        writer = io.ShardWriter(folder, schema or pa.schema([("id", pa.string())]))
        for path in parts:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            writer.write(pa.table({f.name: table.column(f.name).cast(f.type)
                                   if f.name in table.column_names
                                   else pa.nulls(len(table), f.type) for f in writer.schema},
                                  writer.schema))
        if not parts:
            writer.write(writer.schema.empty_table())
        writer.close()
    io.write_manifest(folder, manifest)


def _table(rows: Iterator[dict]) -> pa.Table | None:
    """The next ``SHARD_ROWS`` rows as a table (None when there are none left): columns in
    order of first appearance, each of the type that holds all its values."""
    tables, left = [], SHARD_ROWS
    while left and (chunk := list(islice(rows, min(left, TABLE_ROWS)))):
        left -= len(chunk)
        columns = list(dict.fromkeys(k for r in chunk for k in r))
        tables.append(pa.Table.from_pydict({k: [r.get(k) for r in chunk] for k in columns}))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()
