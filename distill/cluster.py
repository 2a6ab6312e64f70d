"""The Ray cluster behind ``--executor ray``: connect once, then size actor pools from it.

Ray is imported here only, when a command asks for it, so ``import distill`` stays light and
the local path works without Ray installed.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

from distill.errors import DistillError

# Where Ray looks for the token of a cluster with token authentication, before ~/.ray/auth_token.
TOKEN_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# The token of the single-machine clusters this process starts: one per process, as Ray keeps
# the first token it reads for the life of the process.
LOCAL_TOKEN = secrets.token_hex(32)


@contextmanager
def session(address: str | None = None):
    """The ``ray`` module, connected to the cluster at ``address`` ("HOST:PORT", "auto" or
    "ray://HOST:PORT"); None: the cluster in ``RAY_ADDRESS`` or one started on this machine
    by ``ray start``, else a new single-machine cluster for this process. A connection made
    here is closed on exit (sooner than Ray's exit hook would close it), and the Ray
    settings in the environment are put back as they were."""
    try:
        import ray
    except ImportError:
        raise DistillError("--executor ray needs Ray: pip install 'distill[ray]' "
                           "(or pip install 'ray[data]')") from None
    opened = not ray.is_initialized()
    if not opened:
        yield ray
        return
    saved = _ray_settings()
    try:
        if address in (None, "local") and not _token_at_hand():
            # A new single-machine cluster gets token authentication (Ray's default), and
            # Ray would write a new token to ~/.ray/auth_token, where every later `ray start
            # --head` finds it and then refuses drivers that connect by address. The token
            # lives in this process's environment instead, which Ray's processes inherit.
            os.environ["RAY_AUTH_TOKEN"] = LOCAL_TOKEN
        _connect(ray, address)
        yield ray
    finally:
        ray.shutdown()
        for name in _ray_settings().keys() - saved.keys():  # say, RAY_AUTH_MODE=token
            del os.environ[name]
        os.environ.update(saved)


def _ray_settings() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("RAY_")}


def _token_at_hand() -> bool:
    """Whether Ray finds a token of its own: in the environment or in ~/.ray/auth_token."""
    return (any(os.environ.get(name) for name in TOKEN_ENV)
            or (Path.home() / ".ray" / "auth_token").exists())


def _connect(ray, address: str | None) -> None:
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0]
        if "InvalidAuthToken" in _causes(e):
            reason = ("it wants an authentication token: set RAY_AUTH_MODE=token, with the "
                      "cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or "
                      "RAY_AUTH_TOKEN")
        raise DistillError(f"cannot connect to the Ray cluster at {address}: {reason}") from None


def _causes(error: BaseException) -> str:
    """The messages of ``error`` and of the errors that caused it."""
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(text)


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
