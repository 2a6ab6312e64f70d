"""Output folders a command owns: one writer at a time, and never a user's files.

``claim(folder, ...)`` is what every writing command (generate, filter, publish, eval, train,
logits capture) wraps its writing in. It refuses an output that is also an input (or holds
one, or lies inside one), takes the folder's lock (``.distill.lock``: ``fcntl.flock`` plus the
holder's pid and host, so a second writer stops at once naming the first), and checks the
folder is new, empty, or written by the same command (its marker file, usually
``manifest.json``, says ``"kind": ...``). A folder holding anything else is refused, naming
``--overwrite``; with it, what the folder holds is moved aside to a sibling
``DIR.replaced-<timestamp>/`` (a sibling, not a subfolder: what is inside the output is
published, uploaded and loaded with it), never deleted.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from distill.errors import DistillError

LOCK = ".distill.lock"
# Markers that distill wrote before they carried a kind (train runs before 0.2; compare,
# student init and analyze reports before 0.3).
UNMARKED = {"distill_sft.json": "train", "compare.json": "compare",
            "init_report.json": "student-init", "temperatures.json": "temperatures",
            "compression.json": "compression"}
TMP = ".tmp"  # per-writer scratch space (``distill.io``); never a user's file by itself


OVERWRITE_HELP = ("write into --out even when it holds files this command did not write: they are "
                  "moved aside to OUT.replaced-<timestamp>/, never deleted")


def add_overwrite(parser, verb: bool = False) -> None:
    """The ``--overwrite`` flag, the same in every writing command. ``verb``: the parser is a
    verb under a command that has the flag too, and the command's value stands unless the verb
    is given it (``distill eval --overwrite compare ...``)."""
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP,
                        **({"default": argparse.SUPPRESS} if verb else {}))


@contextmanager
def claim(folder: str | Path, command: str, kind: str, *, marker: str = "manifest.json",
          inputs=(), overwrite: bool = False, flag: str = "--out", mark: bool = True):
    """Own ``folder`` for ``distill command`` for the duration of the block (see the module
    docstring). ``kind``: what ``marker`` (a JSON file, relative to the folder) says when this
    command wrote the folder; ``mark``: write ``{"kind": kind}`` there at once when the folder
    is new, so a run stopped early still owns it; ``inputs``: paths read by the command (those
    that exist locally are checked against the output)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DistillError(f"{flag} {folder}: is a file, not a folder; choose a folder")
    refuse_input(folder, inputs, flag)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with lock(folder, command):
            fresh = not _entries(folder)
            if not fresh and not _ours(folder, marker, kind, overwrite):
                aside = _replaced_name(folder)
                if not overwrite:
                    shown = ", ".join(sorted(_entries(folder))[:4])
                    raise DistillError(
                        f"{flag} {folder}: holds files distill {command} did not write "
                        f"({shown}); choose another folder, or pass --overwrite to move them "
                        f"aside to {aside}/")
                _move_aside(folder, aside)
                fresh = True
            record = {"kind": kind, "status": "running"}
            if fresh and mark:
                _write_json(folder / marker, record)
            try:
                yield folder
            except BaseException:
                if fresh:
                    _unmark(folder, marker, record)
                raise
    finally:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a start that failed leaves nothing behind


def refuse_input(out: Path, inputs, flag: str = "--out") -> None:
    """Stop when ``out`` is one of ``inputs``, holds one or lies inside one."""
    target = out.resolve()
    for path in inputs:
        if path is None or not Path(path).exists():
            continue
        source = Path(path).resolve()
        if target == source or target in source.parents or source in target.parents:
            raise DistillError(f"{flag} {out}: would overwrite the input {path} (it is, holds "
                               "or lies inside it); a command never writes into its input: "
                               "choose another folder")


def own_file(path: str | Path, mark: str, command: str, *, inputs=(), flag: str) -> Path:
    """Stop unless ``path`` (one output file) is new or was written by ``distill command``
    (its first 4 kB hold ``mark``): a user's file is never rewritten, nor an input."""
    path = Path(path)
    refuse_input(path, inputs, flag)
    if path.is_dir():
        raise DistillError(f"{flag} {path}: is a folder; give a file name")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(4096)
        if mark.encode() not in head:
            raise DistillError(f"{flag} {path}: a file distill {command} did not write; "
                               "choose another name (it is left as it is)")
    return path


@contextmanager
def lock(folder: str | Path, command: str):
    """Hold ``folder/.distill.lock`` for the block, or stop at once naming its holder."""
    path = Path(folder) / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(path)
            raise DistillError(
                f"{folder}: another writer is at work in it (distill {holder.get('command', '?')},"
                f" pid {holder.get('pid', '?')} on host {holder.get('host', '?')}); wait for it "
                "to finish, or choose another folder") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # else the holder removed it between our open and flock: take the new one
        except FileNotFoundError:
            pass
        os.close(fd)
    record = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())
    try:
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def pid_alive(host: str, pid: int) -> bool:
    """Whether ``pid`` may still run: always true for another host's pid."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # the holder has not written its record yet


def _entries(folder: Path) -> set[str]:
    names = {p.name for p in folder.iterdir()} - {LOCK}
    if TMP in names and not any((folder / TMP).iterdir()):
        names.discard(TMP)
    return names


def _ours(folder: Path, marker: str, kind: str, overwrite: bool) -> bool:
    path = folder / marker
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        if overwrite:
            return False
        raise DistillError(f"{path}: not valid JSON ({e}); fix or remove it, or pass "
                           "--overwrite to move the folder's files aside") from None
    return isinstance(record, dict) and record.get("kind", UNMARKED.get(marker)) == kind


def _replaced_name(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, k = folder.with_name(f"{folder.name}.replaced-{stamp}"), 1
    while aside.exists():
        aside, k = folder.with_name(f"{folder.name}.replaced-{stamp}-{k}"), k + 1
    return aside


def _move_aside(folder: Path, aside: Path) -> None:
    from distill.log import log

    aside.mkdir()
    for name in sorted(_entries(folder)):
        os.replace(folder / name, aside / name)
    log(f"--overwrite: moved what {folder} held to {aside}/")


def _unmark(folder: Path, marker: str, record: dict) -> None:
    """Remove the marker ``claim`` wrote (and folders made for it) when nothing else was
    written since; else keep it: the folder is this command's, to resume."""
    path = folder / marker
    others = (p for p in folder.rglob("*") if p.is_file() and p not in (path, folder / LOCK))
    try:
        if next(others, None) is not None or json.loads(path.read_text()) != record:
            return
        path.unlink()
        for parent in path.relative_to(folder).parents[:-1]:
            (folder / parent).rmdir()
    except (OSError, ValueError):
        pass


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
