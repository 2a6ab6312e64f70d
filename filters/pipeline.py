"""Run filter stages in order over a dataset folder; write kept rows, dropped rows (with
``dropped_by`` and ``drop_reason``) and a funnel report."""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from distill import io
from distill.errors import DistillError
from distill.filters.base import Stage

STAGES = {
    "parse": "distill.filters.parse:Parse",
    "verify": "distill.filters.verify:Verify",
    "execute": "distill.filters.execute:Execute",
    "vote": "distill.filters.vote:Vote",
    "pass_rate": "distill.filters.vote:PassRate",
    "agreement": "distill.filters.vote:Agreement",
    "dedupe": "distill.filters.dedupe:Dedupe",
    "quality": "distill.filters.quality:Quality",
    "decontaminate": "distill.filters.decontaminate:Decontaminate",
    "score": "distill.filters.score:Score",
}
SHARD_ROWS = 10_000


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise DistillError(f"unknown filter stage {name!r}; stages: {', '.join(STAGES)}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_stages(spec: list, where: str = "stages") -> list[Stage]:
    """Stages from a list of names or one-key mappings ``{name: {option: value}}``."""
    stages = []
    for i, entry in enumerate(spec):
        name, options = (entry, {}) if isinstance(entry, str) else _entry(entry, f"{where}[{i}]")
        cls = stage_class(name)
        try:
            stage = cls(**(options or {}))
            stage.options = dict(options or {})
            stages.append(stage)
        except TypeError as e:
            raise DistillError(f"{where}[{i}] ({name}): {e}".replace("__init__() ", "")) from None
    return stages


def _entry(entry, where: str) -> tuple[str, dict]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise DistillError(f"{where}: a stage is a name or a one-key mapping {{name: options}}")
    name, options = next(iter(entry.items()))
    if options is not None and not isinstance(options, dict):
        raise DistillError(f"{where} ({name}): options must be a mapping")
    return name, options or {}


def load_config(path: str | Path) -> list:
    """The ``stages`` list of a filter YAML file (a shipped preset name or a path)."""
    p = Path(path)
    if not p.exists():
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
               stages: list[str] | None = None) -> FilterResult:
    """Filter the dataset at ``in_dir`` into ``out_dir/kept``, ``out_dir/dropped`` and the
    report. ``config`` is a filter YAML file or preset name (default: the preset for the
    input's prompt kind: cot, pot or instruction); ``stages`` picks and orders stages."""
    from distill.filters.report import write_report

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not io.shard_paths(in_dir):
        raise DistillError(f"{in_dir}: not a dataset folder (no data/part-*.parquet)")
    preset = ((io.read_manifest(in_dir) or {}).get("prompt") or {}).get("kind", "cot")
    spec = load_config(config or (preset if preset in ("pot", "instruction") else "cot"))
    if stages is not None:
        spec = pick_stages(spec, stages)
    pipeline = build_stages(spec, f"{config or preset}: stages")
    rows = io.read_rows(in_dir)
    kept, dropped, timings = rows, [], []
    for stage in pipeline:
        start = time.perf_counter()
        kept, out = stage(kept)
        dropped += out
        timings.append(time.perf_counter() - start)
        print(f"filter {stage.name}: {stage.stats.seen} seen, {stage.stats.dropped} dropped, "
              f"{len(kept)} left ({timings[-1]:.1f}s)", file=sys.stderr, flush=True)
    summary = [{"stage": s.name, "options": s.options, **s.stats.to_dict(),
                "seconds": round(t, 3), **s.report()} for s, t in zip(pipeline, timings)]
    lineage = {"kind": "filter", "created": io.now(), "input": str(in_dir),
               "input_manifest": io.read_manifest(in_dir), "stages": summary,
               "versions": io.package_versions()}
    write_rows(out_dir / "kept", kept, {**lineage, "rows": len(kept)})
    write_rows(out_dir / "dropped", dropped, {**lineage, "rows": len(dropped)})
    write_report(out_dir, len(rows), summary, dropped)
    return FilterResult(out_dir, len(rows), len(kept), len(dropped), summary)


def write_rows(folder: Path, rows: list[dict], manifest: dict) -> None:
    """Write rows as a fresh dataset folder (any previous shards there are replaced)."""
    import shutil

    shutil.rmtree(folder / io.DATA_DIR, ignore_errors=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ in columns
    rows = [{k: r.get(k) for k in columns} for r in rows]
    schema = pa.Table.from_pylist(rows).schema if rows else pa.schema([("id", pa.string())])
    writer = io.ShardWriter(folder, schema)
    for i in range(0, max(len(rows), 1), SHARD_ROWS):
        writer.write(rows[i:i + SHARD_ROWS])
    writer.close()
    io.write_manifest(folder, manifest)
