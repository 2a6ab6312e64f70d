"""Run filter stages in order over a dataset folder; write kept rows, dropped rows (with
``dropped_by`` and ``drop_reason``) and a funnel report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from distill import io
from distill.data import Data, conversations, read
from distill.errors import DistillError
from distill.filters.base import Filtered, Stage, log_stage
from distill.filters.stages import build_stages, stage_class
from distill.folders import claim

SHARD_ROWS = 10_000


def load_filter_config(path: str | Path) -> list:
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
               stages: list[str] | None = None, executor: str = "local",
               ray_address: str | None = None, ray_workers: int | None = None,
               data_options: dict | None = None, overwrite: bool = False) -> FilterResult:
    """Filter the data at ``in_dir`` (anything ``distill.data.read`` takes, with
    ``data_options``: its split, subset, revision and fields; a conversational format is
    mapped to distill's row, other columns are left to the stages that need them) into
    ``out_dir/kept``, ``out_dir/dropped`` and the report. ``config`` is a filter YAML file or
    preset name (default: the preset for the input's prompt kind: cot, pot or instruction);
    ``stages`` picks and orders stages.
    ``executor="ray"`` runs them as Ray Data pipelines on ``ray_workers`` workers of the
    cluster at ``ray_address`` (``distill.filters.ray``), keeping and dropping the same rows.
    ``out_dir`` must be new, empty or a filter output (``overwrite``: move what else it holds
    aside), and never the input or inside it."""
    if executor not in ("local", "ray"):
        raise DistillError(f"executor must be local or ray, not {executor!r}")
    out_dir = Path(out_dir)
    source = conversations(read(in_dir, **(data_options or {})), required=False)
    with claim(out_dir, "filter", "filter", marker="kept/manifest.json",
               inputs=[in_dir, source.folder, *source.files], overwrite=overwrite):
        return _filter(source, in_dir, out_dir, config, stages, executor, ray_address,
                       ray_workers, data_options)


def _filter(source: Data, in_dir, out_dir: Path, config, stages, executor, ray_address,
            ray_workers, data_options) -> FilterResult:
    from distill.filters.report import write_report

    manifest = source.manifest
    preset = ((manifest or {}).get("prompt") or {}).get("kind", "cot")
    spec = load_filter_config(config or (preset if preset in ("pot", "instruction") else "cot"))
    if stages is not None:
        spec = pick_stages(spec, stages)
    pipeline = build_stages(spec, f"{config or preset}: stages")
    if executor == "ray":
        from distill.filters.ray.filter import filter_on_ray

        if source.kind not in ("dataset", "filter output") or (data_options or {}).get("fields"):
            raise DistillError(f"{in_dir}: --executor ray reads a distill dataset folder "
                               "(data/part-*.parquet) as it is; filter this data locally")
        run = filter_on_ray(source.folder, spec, pipeline, ray_address, ray_workers)
    else:
        run = filter_rows(source.dataset.to_list(), pipeline)
    summary = [{"stage": s.name, "options": s.options, **s.stats.to_dict(),
                "seconds": round(t, 3), **r} for s, t, r in zip(pipeline, run.seconds, run.reports)]
    lineage = {"kind": "filter", "created": io.now(), "input": str(in_dir),
               "input_manifest": manifest, "stages": summary,
               "versions": io.package_versions()}
    write_rows(out_dir / "kept", run.kept, {**lineage, "rows": len(run.kept)})
    write_rows(out_dir / "dropped", run.dropped, {**lineage, "rows": len(run.dropped)})
    write_report(out_dir, run.rows_in, summary, run.dropped)
    return FilterResult(out_dir, run.rows_in, len(run.kept), len(run.dropped), summary)


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


def write_rows(folder: Path, rows: list[dict], manifest: dict) -> None:
    """Write rows as the dataset of ``folder`` (a folder filter owns: the shards it wrote
    there before are replaced; nothing else is touched)."""
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["id"]  # rows may differ
    table = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in columns})
    if not rows:
        table = table.cast(pa.schema([("id", pa.string())]))
    io.write_dataset(folder, table, manifest, SHARD_ROWS)
