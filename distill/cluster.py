"""The Ray cluster behind ``--executor ray``: connect once, then size actor pools from it.

Ray is imported here only, when a command asks for it, so ``import distill`` stays light and
the local path works without Ray installed.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

from distill.errors import DistillError


@contextmanager
def session(address: str | None = None):
    """The ``ray`` module, connected to the cluster at ``address`` ("HOST:PORT", "auto" or
    "ray://HOST:PORT"); None: the cluster in ``RAY_ADDRESS`` or one started on this machine
    by ``ray start``, else a new single-machine cluster for this process. A connection made
    here is closed on exit (sooner than Ray's exit hook would close it)."""
    try:
        import ray
    except ImportError:
        raise DistillError("--executor ray needs Ray: pip install 'distill[ray]' "
                           "(or pip install 'ray[data]')") from None
    opened = not ray.is_initialized()
    if opened:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DistillError(f"cannot connect to the Ray cluster at {address}: "
                               f"{str(e).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        if opened:
            ray.shutdown()


def ray_data(ray):
    """``ray.data``, set to keep outputs in input order (as the local path) and quiet
    (distill prints its own progress); imported only where used, as it takes a while."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.data


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


def shuffle(ray, blocks: list, keyed, keyed_args: tuple, keys: list[str], parts: int, reduce,
            reduce_args: tuple) -> list:
    """Object refs of ``reduce(partition, *reduce_args)`` for each of ``parts`` hash partitions
    of the rows that ``keyed(block, *keyed_args)`` makes of each of ``blocks`` (refs to Arrow
    tables), partitioned by their unsigned-integer ``keys`` columns, so rows with equal keys
    meet in one partition: one map task per block, one reduce task per partition, spread over
    the cluster's workers."""
    split = ray.remote(_split).options(num_returns=parts)
    pieces = [split.remote(block, keyed, keyed_args, keys, parts) for block in blocks]
    if parts == 1:
        pieces = [[p] for p in pieces]
    gather = ray.remote(_gather)
    return [gather.remote(reduce, reduce_args, *(p[i] for p in pieces)) for i in range(parts)]


def _split(block, keyed, keyed_args: tuple, keys: list[str], parts: int):
    import numpy as np
    import pyarrow as pa

    table = keyed(block, *keyed_args)
    h = np.zeros(table.num_rows, np.uint64)
    for key in keys:
        h = (h ^ table.column(key).to_numpy().astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    part = (h >> np.uint64(32)) % np.uint64(parts)
    out = [table.filter(pa.array(part == i)) for i in range(parts)]
    return out[0] if parts == 1 else out


def _gather(reduce, args: tuple, *tables):
    import pyarrow as pa

    return reduce(pa.concat_tables(tables, promote_options="permissive"), *args)
