"""The Arrow blocks that carry rows between the ray executor's tasks: rows no stage changed
come back exactly as the local executor reads them, rows a stage returned come back exactly
as it returned them, and the gathered rows are in input order; the executor plans its steps
from what the stages declare. No Ray needed."""

import numpy as np
import pyarrow as pa

from distill import io
from distill.filters.base import GroupStage, RowStage
from distill.filters.dedupe import Dedupe
from distill.filters.ray.blocks import (
    alive,
    concat,
    in_order,
    pickled,
    read_shard,
    replaced,
    rows_of,
)
from distill.filters.ray.filter import group_hashes, steps

ROWS = [{"id": f"r{i}", "completion": f"text {i}", "score": None if i % 3 else float(i),
         "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(7)]


def shards(tmp_path, rows, size):
    writer = io.ShardWriter(tmp_path, pa.Table.from_pylist(rows).schema)
    for i in range(0, len(rows), size):
        writer.write(rows[i:i + size])
    writer.close()
    return [read_shard(i, str(p)) for i, p in enumerate(io.shard_paths(tmp_path))]


def test_unchanged_rows_come_back_as_the_local_executor_reads_them(tmp_path):
    blocks = shards(tmp_path, ROWS, 3)
    assert [b.num_rows for b in blocks] == [3, 3, 1]
    rows, drop = in_order(blocks)
    assert rows == io.read_rows(tmp_path) == ROWS
    assert drop.tolist() == [-1] * 7
    assert rows_of(blocks[0], ["id", "nope"]) == [{"id": "r0"}, {"id": "r1"}, {"id": "r2"}]


def test_replaced_rows_keep_what_a_stage_made_of_them(tmp_path):
    block = shards(tmp_path, ROWS, 7)[0]
    changed = {**ROWS[4], "duplicate_of": "r1", "dropped_by": "dedupe", "extra": {"k": (1, 2)}}
    block = replaced(block, np.array([4]), [changed], np.array([-1, -1, -1, -1, 2, -1, -1]))
    rows = rows_of(block)
    assert rows[4] == changed and rows[:4] + rows[5:] == ROWS[:4] + ROWS[5:]
    assert [r["id"] for r in rows_of(alive(block))] == ["r0", "r1", "r2", "r3", "r5", "r6"]


def test_gathered_blocks_are_in_input_order_whatever_their_kind(tmp_path):
    first, second = shards(tmp_path, ROWS, 4)
    stage_made = pickled(second.column("_pos"), [{**r, "answer": "4"} for r in ROWS[4:]],
                         np.array([-1, 0, -1]))
    # a shuffle leaves rows of both kinds mixed, out of order, in one block
    mixed = concat([stage_made, first.slice(2), first.slice(0, 2)])
    rows, drop = in_order([mixed])
    assert rows == ROWS[:4] + [{**r, "answer": "4"} for r in ROWS[4:]]
    assert drop.tolist() == [-1, -1, -1, -1, -1, 0, -1]


class ByRemainder(GroupStage):
    """A group stage no executor knows: groups rows by their number modulo 3."""

    name = "by_remainder"

    def group_key(self, row):
        return int(row["id"][1:]) % 3


class Keep(RowStage):
    name = "keep"

    def check(self, row):
        return None


def test_the_executor_runs_stages_as_they_declare_and_groups_by_the_declared_key(tmp_path):
    pipeline = [Keep(), Keep(), ByRemainder(), Keep(), Dedupe(method="exact"),
                Dedupe(method="semantic")]
    assert [(kind, first, len(stages)) for kind, first, stages in steps(pipeline)] == [
        ("rows", 0, 2), ("groups", 2, 1), ("rows", 3, 1), ("distributed", 4, 1),
        ("driver", 5, 1)]
    block = shards(tmp_path, ROWS, 7)[0]
    drop = np.full(7, -1)
    drop[3] = 0  # dropped before: it only passes through, grouped by its position
    block = replaced(block, np.array([3]), [ROWS[3]], drop)
    groups = group_hashes(block, ByRemainder().group_key).column("_group").to_pylist()
    assert groups[0] == groups[6] and groups[1] == groups[4] and groups[2] == groups[5]
    assert len({groups[0], groups[1], groups[2], groups[3]}) == 4
