"""The Ray cluster behind ``--executor ray``: connect once, then size actor pools from it.

Ray is imported here only, when a command asks for it, so ``import distill`` stays light and
the local path works without Ray installed.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

from distill.errors import DistillError


def connect(address: str | None = None):
    """The ``ray`` module, connected to the cluster at ``address`` ("HOST:PORT", "auto" or
    "ray://HOST:PORT"); None: the cluster in ``RAY_ADDRESS`` or one started on this machine
    by ``ray start``, else a new single-machine cluster for this process."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise DistillError("--executor ray needs Ray: pip install 'distill[ray]' "
                           "(or pip install 'ray[data]')") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DistillError(f"cannot connect to the Ray cluster at {address}: "
                               f"{str(e).splitlines()[0]}") from None
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # outputs in input order: same as local
    ctx.enable_progress_bars = False  # distill prints its own progress
    ctx.print_on_execution_start = False
    return ray


def resources(ray) -> tuple[int, int]:
    """(CPUs, GPUs) of the whole cluster."""
    total = ray.cluster_resources()
    return int(total.get("CPU", 0)), int(total.get("GPU", 0))


@contextmanager
def worker_errors():
    """Raise a DistillError that a worker raised as a DistillError here (Ray passes it on
    wrapped in its own errors, as text)."""
    from ray.exceptions import RayError

    try:
        yield
    except RayError as e:
        found = re.search(r"^distill\.errors\.DistillError: (.*)$", str(e), re.MULTILINE)
        if found:
            raise DistillError(found.group(1)) from None
        raise


def grouped(ray, ds, keys: list[str], parts: int, fn, *args):
    """A Ray dataset of ``fn(partition, *args)`` for each of ``parts`` hash partitions of the
    rows of ``ds`` by its unsigned-integer ``keys`` columns, so each group of rows with equal
    keys is whole in one partition: a map task per block splits it, a task per partition
    gathers its pieces and runs ``fn``, all across the cluster's workers."""
    blocks = ds.to_arrow_refs()
    if not blocks:
        return ray.data.from_items([])
    split = ray.remote(_split).options(num_returns=parts)
    pieces = [split.remote(block, keys, parts) for block in blocks]
    if parts == 1:
        pieces = [[p] for p in pieces]
    gather = ray.remote(_gather)
    return ray.data.from_arrow_refs([gather.remote(fn, args, *(p[i] for p in pieces))
                                     for i in range(parts)])


def _split(table, keys: list[str], parts: int):
    import numpy as np
    import pyarrow as pa

    if not table.num_rows:  # an empty block may lack the columns too
        return table if parts == 1 else [table] * parts
    h = np.zeros(table.num_rows, np.uint64)
    for key in keys:
        h = (h ^ table.column(key).to_numpy().astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    part = (h >> np.uint64(32)) % np.uint64(parts)
    out = [table.filter(pa.array(part == i)) for i in range(parts)]
    return out[0] if parts == 1 else out


def _gather(fn, args, *tables):
    import pyarrow as pa

    return fn(pa.concat_tables([t for t in tables if t.num_rows] or tables[:1]), *args)
