"""Problem sources: jsonl, json, csv, parquet, txt (one item per line), a ``save_to_disk``
folder, a folder of Parquet shards (a distill dataset), or a hub dataset id when online.

Each row comes back with ``where`` (``file:line`` or ``file[row]``) so errors can point at it.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError


@dataclass
class SourceRow:
    fields: dict
    where: str


def load_source(source: str, *, fields: dict[str, str] | None = None, limit: int | None = None,
                shuffle: bool = False, seed: int = 0, split: str = "train",
                subset: str | None = None) -> list[SourceRow]:
    """Read a source and apply the field mapping (``{"question": "problem"}`` makes the
    template variable ``question`` read the source field ``problem``)."""
    rows = _read(source, split, subset)
    if not rows:
        raise DistillError(f"{source}: the source is empty")
    if shuffle:
        random.Random(seed).shuffle(rows)
    if limit is not None:
        rows = rows[:limit]
    return [_map(r, fields or {}, source) for r in rows]


def _map(row: SourceRow, fields: dict[str, str], source: str) -> SourceRow:
    mapped = dict(row.fields)
    for target, name in fields.items():
        if name not in row.fields:
            raise DistillError(f"{row.where}: --field {target}={name}: the source has no field "
                               f"{name!r}; it has: {', '.join(row.fields)}")
        mapped[target] = row.fields[name]
    return SourceRow(mapped, row.where)


def _read(source: str, split: str, subset: str | None) -> list[SourceRow]:
    path = Path(source)
    if path.is_dir():
        return _read_dir(path, split)
    if path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DistillError(f"{path}: unsupported source type {path.suffix!r}; "
                               f"use one of {', '.join(_READERS)} or a dataset folder")
        return reader(path)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return _read_hub(source, split, subset)
    raise DistillError(f"{source}: no such file or folder")


def _read_jsonl(path: Path) -> list[SourceRow]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DistillError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DistillError(f"{path}:{n}: each line must be a JSON object")
            rows.append(SourceRow(obj, f"{path}:{n}"))
    return rows


def _read_json(path: Path) -> list[SourceRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DistillError(f"{path}: expected a list of objects")
    return [SourceRow(r, f"{path}[{i}]") for i, r in enumerate(data)]


def _read_csv(path: Path) -> list[SourceRow]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return [SourceRow(dict(r), f"{path}:{reader.line_num}") for r in reader]


def _read_txt(path: Path) -> list[SourceRow]:
    """One item per line, as field ``topic`` (instruction grids) and ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [SourceRow({"topic": s.strip(), "text": s.strip()}, f"{path}:{n}")
            for n, s in enumerate(lines, 1) if s.strip() and not s.lstrip().startswith("#")]


def _read_parquet(path: Path) -> list[SourceRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for corrupt files)
        raise DistillError(f"{path}: unreadable Parquet file: {e}") from None
    return [SourceRow(r, f"{path}[{i}]") for i, r in enumerate(table.to_pylist())]


def _read_dir(path: Path, split: str) -> list[SourceRow]:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DistillError(f"{path}: no split {split!r}; it has: {', '.join(ds)}")
            ds = ds[split]
        return [SourceRow(r, f"{path}[{i}]") for i, r in enumerate(ds)]
    shards = sorted(path.glob("**/*.parquet"))
    if not shards:
        raise DistillError(f"{path}: a folder source must be a save_to_disk dataset "
                           "or hold Parquet files")
    return [row for shard in shards for row in _read_parquet(shard)]


def _read_hub(repo: str, split: str, subset: str | None) -> list[SourceRow]:
    import datasets

    try:
        ds = datasets.load_dataset(repo, subset, split=split)
    except Exception as e:  # noqa: BLE001 (the hub and the loaders raise many types)
        raise DistillError(f"{repo}: not a local path, and loading it from the hub failed: "
                           f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    return [SourceRow(r, f"{repo}:{split}[{i}]") for i, r in enumerate(ds)]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
            ".parquet": _read_parquet, ".txt": _read_txt}
