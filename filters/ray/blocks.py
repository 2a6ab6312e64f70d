"""How rows travel between the Ray tasks of ``distill filter --executor ray``: as Arrow blocks.

A block has ``_pos`` (the row's position in the input: shard << 32 | row), ``_drop`` (the
index of the stage that dropped the row, or -1) and ``_row``. A row that no stage has changed
is still in the block's other columns, as read from its shard, and its ``_row`` is null; a row
that a stage returned is pickled in ``_row``, so it comes back exactly as the stage left it.
Rows are only unpickled and pickled where a stage needs them as dicts, so a pipeline of
dedupes reads just the columns it compares.
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INTERNAL = ("_pos", "_drop", "_row")


def read_shard(shard: int, path: str) -> pa.Table:
    """Shard number ``shard`` at ``path`` as a block of unchanged rows."""
    table = pq.read_table(path)
    n = table.num_rows
    return table.append_column("_pos", pa.array((shard << 32) + np.arange(n, dtype=np.int64))) \
        .append_column("_drop", pa.array(np.full(n, -1, np.int32))) \
        .append_column("_row", pa.nulls(n, pa.binary()))


def pickled(pos, rows: list[dict], drop: np.ndarray) -> pa.Table:
    """A block of rows that stages returned."""
    return pa.table({"_pos": pa.array(pos, pa.int64()),
                     "_drop": pa.array(drop, pa.int32()),
                     "_row": pa.array([pickle.dumps(r) for r in rows], pa.binary())})


def empty() -> pa.Table:
    return pickled([], [], np.zeros(0, np.int32))


def rows_of(block: pa.Table, columns: list[str] | None = None) -> list[dict]:
    """The block's rows as dicts; unchanged rows with only those of ``columns`` they have."""
    if not block.num_rows:
        return []
    data = [c for c in block.column_names
            if c not in INTERNAL and (columns is None or c in columns)]
    blobs = block.column("_row")
    if not blobs.null_count:
        return [pickle.loads(b) for b in blobs.to_pylist()]
    plain = block.select(data).to_pylist() if data else [{} for _ in range(block.num_rows)]
    if blobs.null_count == block.num_rows:
        return plain
    return [r if b is None else pickle.loads(b) for r, b in zip(plain, blobs.to_pylist())]


def alive(block: pa.Table) -> pa.Table:
    """The rows of a block that no earlier stage dropped."""
    if not block.num_rows:
        return empty()
    return block.filter(pa.array(block.column("_drop").to_numpy() == -1))


def replaced(block: pa.Table, at: np.ndarray, rows: list[dict], drop: np.ndarray) -> pa.Table:
    """The block with the rows at indices ``at`` replaced by ``rows`` and ``_drop`` by ``drop``."""
    blobs = block.column("_row").to_pylist()
    for i, row in zip(at.tolist(), rows):
        blobs[i] = pickle.dumps(row)
    block = block.set_column(block.column_names.index("_drop"), "_drop", pa.array(drop, pa.int32()))
    return block.set_column(block.column_names.index("_row"), "_row", pa.array(blobs, pa.binary()))


def concat(blocks: list[pa.Table]) -> pa.Table:
    """One block of blocks whose columns may differ (a column may be absent or all null)."""
    blocks = [b for b in blocks if b.num_rows]
    return pa.concat_tables(blocks, promote_options="permissive") if blocks else empty()


def by_position(block: pa.Table) -> pa.Table:
    """The block's rows sorted by their position in the input."""
    return block.take(np.argsort(block.column("_pos").to_numpy(), kind="stable"))


def in_order(blocks: list[pa.Table]) -> tuple[list[dict], np.ndarray]:
    """The rows of all blocks in input order, and where each was dropped (``_drop``)."""
    blocks = [b for b in blocks if b.num_rows]
    pos = np.concatenate([b.column("_pos").to_numpy() for b in blocks]) if blocks else []
    if not np.all(np.diff(pos) > 0):  # after a shuffle; else the blocks are shards, in order
        blocks = [by_position(concat(blocks))]
    drop = [b.column("_drop").to_numpy() for b in blocks]
    return [r for b in blocks for r in rows_of(b)], np.concatenate(drop or [np.zeros(0, int)])
