"""Run a short, untrusted Python program (a teacher's program-of-thought) and capture its output.

``run_program(code)`` runs ``code`` in a fresh ``python3 -I`` child and returns an
``ExecResult``. The child gets:

* its own session and process group, a fresh temporary working directory (removed
  afterwards), stdin from ``/dev/null`` and only ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR``
  (the last two point at the working directory) in its environment: none of the caller's
  variables (API keys, tokens) reach it;
* resource limits set in ``preexec_fn``: ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL one second
  later), ``RLIMIT_AS`` (allocations fail with ``MemoryError``), ``RLIMIT_FSIZE`` (bigger
  files fail with ``EFBIG``), ``RLIMIT_NPROC``, ``RLIMIT_NOFILE`` and ``RLIMIT_CORE`` = 0;
* a wall-clock timeout and an output cap: pipes are read incrementally, and past the cap
  or the deadline everything the program started is SIGKILLed (SIGTERM handlers don't help);
* in the ``ns`` and ``userns`` modes (below), new network and PID namespaces, made with the
  ``unshare`` syscall in ``preexec_fn`` (``unshare -rn``/``--net`` does the same; the call
  saves an exec). Measured on the Linux 6.18 VM where the tests run: ``ns`` works as root,
  ``userns`` works for a non-root caller (uid 65534) and as root.

Isolation modes, picked once per process by a probe (``sandbox_info()`` says which; the
environment variable ``DISTILL_SANDBOX`` = ``ns``/``userns``/``plain`` forces one):

``ns`` (the caller is root)
    ``unshare(CLONE_NEWNET | CLONE_NEWPID)`` straight away;
``userns`` (not root, or root where ``ns`` fails; unprivileged user namespaces allowed)
    ``unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)``;
``plain`` (neither works)
    no namespaces. ``socket.socket`` is replaced in the child by one that refuses to be
    created: a program can undo that (``ctypes``, ``os.system("curl ...")``), so this mode
    has no real network isolation. The child's relay is a child subreaper, so detached
    descendants stay in its tree and are killed with it (unless the program kills its relay
    first: without a uid drop, it has the same uid).

Root callers (here, where the tests run) also get a uid drop, in every mode: the child
switches to a fresh unprivileged uid/gid of its own (random, above 10^9, no supplementary
groups). Root ignores ``RLIMIT_NPROC``, so the drop is what makes the process limit hold; it
also keeps the program out of root-owned files and directories. After the run every process
with that uid is SIGKILLed (a process cannot get another uid back), and what it left at the
top of ``/tmp``, ``/var/tmp`` and ``/dev/shm`` is removed. Without a drop, the namespace
modes kill every process of the run's PID namespace instead. The interpreter must be
reachable by the dropped uid: ``sys.executable`` under ``/root`` is not, so the probe falls
back to ``python3`` on ``PATH`` (e.g. ``/usr/bin/python3``, without the venv's packages).

How the child is laid out in the namespace modes: a relay process ``P`` (the one ``Popen``
returns) forks ``I``, pid 1 of the new PID namespace, which forks the program. When the
program exits, ``I`` exits and the kernel kills whatever the program left in the
namespace. On a timeout or the output cap, the sandbox SIGKILLs ``I`` (the same happens),
then ``P``'s process group; ``I`` also dies with ``P`` (``PR_SET_PDEATHSIG``). A process
inside can signal nothing outside the namespace but its own process group (killing ``P``
only ends its own run), and never ``I``. ``/proc/self`` still names the host pid (``/proc`` is the
host's).

What it does NOT stop (it is a guard against buggy or greedy programs, not a security
boundary against a determined attacker):

* no seccomp filter: every syscall is allowed, kernel bugs are reachable;
* no mount namespace or chroot: the program reads whatever its uid can read (world-readable
  files, ``/proc``, the source tree); without a uid drop (a non-root caller) it can also
  write wherever the caller can, and files it leaves outside its working directory stay;
* Unix sockets with a path (e.g. a world-writable ``/run/...sock``) are reachable in every
  mode (a network namespace only hides IP and abstract sockets); SysV/POSIX IPC objects
  are not cleaned up;
* ``RLIMIT_AS`` bounds each process, not their sum (up to ``max_processes`` of them);
  ``RLIMIT_FSIZE`` bounds each file, not their number; disk and memory bandwidth, and files
  left in nested world-writable directories, are not bounded;
* ``RLIMIT_NPROC`` is counted per uid (per user namespace): in ``plain`` mode without a uid
  drop it counts all the caller's processes, so ``max_processes`` must exceed those;
* if the calling Python process is SIGKILLed mid-run, ``PR_SET_PDEATHSIG`` kills the relay
  and the namespace init (so the namespace dies), but in ``plain`` mode a detached
  descendant may survive (and its files in ``/tmp``).
"""

from __future__ import annotations

import ctypes
import os
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
CLONE_NEWNS_FLAGS = {"net": 0x40000000, "pid": 0x20000000, "user": 0x10000000}
PR_SET_PDEATHSIG = 1
UID_RANGE = (1_000_000_000, 2_000_000_000)
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
READ_CHUNK = 65536
HELPERS = {"ns": 2, "userns": 2, "plain": 1}  # relay (+ namespace init) count in RLIMIT_NPROC

# Runs in the child as `python3 -I -c PRELUDE <mode>` in the working directory, which holds
# the program as main.py. Kept small: it is part of every run's start-up time.
PRELUDE = r'''
import os, sys

def _exit_like(status):
    if os.WIFSIGNALED(status):
        import signal
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)

def _sandbox():
    import ctypes
    libc = ctypes.CDLL(None)
    if sys.argv[1] == "ns":
        r, w = os.pipe()
        pid = os.fork()
        if pid:  # the relay, outside the new pid namespace
            os.close(w)
            os.waitpid(pid, 0)
            data = os.read(r, 32)
            _exit_like(int(data) if data else 9)
        os.close(r)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: die with the relay
        pid = os.fork()
        if pid:  # pid 1 of the namespace: reap orphans until the program exits, then go
            while True:
                p, status = os.wait()
                if p == pid:
                    break
            os.write(w, b"%d" % status)
            os._exit(0)  # the kernel kills whatever is left in the namespace
        os.close(w)
    else:
        libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of the program come back to us
        pid = os.fork()
        if pid:
            while True:
                p, status = os.wait()
                if p == pid:
                    break
            import signal, time
            while True:  # kill and reap everything the program left behind
                try:
                    with open("/proc/%d/task/%d/children" % (os.getpid(), os.getpid())) as f:
                        kids = [int(k) for k in f.read().split()]
                except OSError:
                    kids = []
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
                except ChildProcessError:
                    break
                time.sleep(0.002)
            _exit_like(status)
        import _socket, socket

        class _NoNetwork(_socket.socket):
            def __init__(self, *args, **kwargs):
                raise PermissionError(1, "network access is disabled in the sandbox")

        socket.socket = socket.SocketType = _socket.socket = _NoNetwork
        socket.socketpair = socket.fromfd = socket.create_connection = _NoNetwork

_sandbox()
del _sandbox, _exit_like
sys.argv = ["main.py"]
import types as _types
_main = _types.ModuleType("__main__")
_main.__file__ = "main.py"
sys.modules["__main__"] = _main
with open("main.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "main.py", "exec")
try:
    exec(_code, _main.__dict__)
except SystemExit:
    raise
except BaseException as _e:
    import traceback
    traceback.print_exception(type(_e), _e, _e.__traceback__.tb_next)
    sys.exit(1)
'''


@dataclass
class ExecResult:
    """What one run did. ``returncode`` is negative for a signal (``-9`` after a kill);
    ``killed_reason`` says why the sandbox stopped it ("timeout", "output limit") or why the
    kernel did ("cpu limit"); ``truncated`` says that stdout or stderr hit ``max_output``."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False
    seconds: float = 0.0
    killed_reason: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.killed_reason is None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Config:
    mode: str  # "ns" | "userns" | "plain"
    python: str
    drop_uid: bool  # the caller is root: the child gets a uid of its own


_LOCK = threading.Lock()
_CONFIGS: dict[tuple, _Config] = {}
_UIDS_IN_USE: set[int] = set()
_LIBC = ctypes.CDLL(None, use_errno=True)


def sandbox_info(python: str | None = None) -> dict:
    """How runs are isolated here: ``{"mode": "ns" | "userns" | "plain", "drop_uid": bool,
    "python": interpreter}`` (see the module doc)."""
    return asdict(_config(python))


def run_program(code: str, *, timeout: float = 5.0, cpu_seconds: int = 5, memory_mb: int = 512,
                max_output: int = 64_000, max_file_mb: int = 16, max_processes: int = 64,
                python: str | None = None) -> ExecResult:
    """Run ``code`` as a Python program in the sandbox; see the module doc. ``max_output``
    caps stdout and stderr each (bytes); ``max_processes`` caps the program's processes and
    threads; ``python`` is the interpreter (default: this one, or ``python3`` on ``PATH``
    where this one is out of reach of the sandbox's uid)."""
    cfg = _config(python)
    return _run(cfg, code, timeout=timeout, cpu_seconds=cpu_seconds, memory_mb=memory_mb,
                max_output=max_output, max_file_mb=max_file_mb, max_processes=max_processes)


def _run(cfg: _Config, code: str, *, timeout: float, cpu_seconds: int, memory_mb: int,
         max_output: int, max_file_mb: int, max_processes: int) -> ExecResult:
    workdir = tempfile.mkdtemp(prefix="distill-sandbox-", dir=_workdir_base(cfg.drop_uid))
    uid = _take_uid() if cfg.drop_uid else None
    proc = None
    try:
        main = os.path.join(workdir, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            os.chown(main, uid, uid)
            os.chown(workdir, uid, uid)
        limits = [(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1)),
                  (resource.RLIMIT_AS, (memory_mb << 20,) * 2),
                  (resource.RLIMIT_FSIZE, (max_file_mb << 20,) * 2),
                  (resource.RLIMIT_NPROC, (max_processes + HELPERS[cfg.mode],) * 2),
                  (resource.RLIMIT_NOFILE, (256, 256)),
                  (resource.RLIMIT_CORE, (0, 0))]
        env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        start = time.monotonic()
        proc = subprocess.Popen(
            [cfg.python, "-I", "-c", PRELUDE, "plain" if cfg.mode == "plain" else "ns"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            preexec_fn=lambda: _child_setup(cfg.mode, uid, limits))  # noqa: PLW1509 (see there)
        pidns = _pidns_of(proc.pid) if cfg.mode != "plain" and uid is None else None
        out, err, timed_out, reason, truncated = _communicate(proc, start + timeout, max_output)
        _kill_all(proc, cfg.mode, uid, pidns)
        seconds = time.monotonic() - start
        returncode = proc.returncode
        if reason is None and returncode == -signal.SIGXCPU:
            reason = "cpu limit"
        return ExecResult(_text(out, "stdout" in truncated, max_output),
                          _text(err, "stderr" in truncated, max_output), returncode,
                          timed_out, round(seconds, 4), reason, bool(truncated))
    finally:
        if proc is not None and proc.returncode is None:  # an exception above: still clean up
            _kill_all(proc, cfg.mode, uid, None)
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _remove_files_of(uid)
            with _LOCK:
                _UIDS_IN_USE.discard(uid)


def _child_setup(mode: str, uid: int | None, limits: list) -> None:
    """In the forked child, before exec: namespaces, uid drop, limits. Only calls functions of
    modules already imported (it runs in a fork of a possibly multi-threaded process)."""
    if mode == "ns":  # needs root: before the drop
        _unshare(CLONE_NEWNS_FLAGS["net"] | CLONE_NEWNS_FLAGS["pid"])
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if mode == "userns":  # after the drop: the namespace then belongs to the new uid
        _unshare(CLONE_NEWNS_FLAGS["user"] | CLONE_NEWNS_FLAGS["net"] | CLONE_NEWNS_FLAGS["pid"])
    for res, value in limits:  # after the userns: its limits then count only what runs in it
        resource.setrlimit(res, value)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it


def _unshare(flags: int) -> None:
    if _LIBC.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")


def _communicate(proc: subprocess.Popen, deadline: float, cap: int):
    """Read both pipes until EOF, the deadline or the cap; never blocks on a full pipe."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out, reason, truncated, exited_at = False, None, set(), None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out, reason = True, "timeout"
                break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break  # the program is gone; a stray descendant holds the pipes: killed next
            for key, _ in sel.select(min(deadline - now, 0.1)):
                try:
                    chunk = os.read(key.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    truncated.add(names[key.fd])
                    reason = "output limit"
            if reason:
                break
    finally:
        sel.close()
    return (bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]),
            timed_out, reason, truncated)


def _text(data: bytes, truncated: bool, cap: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if truncated:
        text += f"\n[... output truncated at {cap} bytes]"
    return text


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it: while it is a zombie its pid (and
    process group id) cannot be reused, so the kill that follows cannot hit a stranger."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_all(proc: subprocess.Popen, mode: str, uid: int | None, pidns: int | None) -> None:
    """SIGKILL the program and everything it started; reap the relay."""
    if mode == "plain" and uid is None and not _exited(proc.pid):
        _kill_tree(proc.pid)  # the relay is a subreaper: detached descendants are under it
    elif mode != "plain" and not _exited(proc.pid):
        # kill the namespace init first: the kernel empties the namespace, the relay reaps
        # the init and exits (killing both at once would leave the init to be reaped by
        # pid 1, which not every container's pid 1 does)
        init = _children_of(proc.pid)
        for pid in init:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + 1.0
        while init and not _exited(proc.pid) and time.monotonic() < end:
            time.sleep(0.001)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # relay and namespace init: the namespace dies
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
        pass
    if uid is not None:
        _kill_matching(lambda pid: uid in (_uids_of(pid) or ()))
    elif pidns is not None:
        _kill_matching(lambda pid: _pidns_of(pid) == pidns)


def _kill_matching(match, limit: float = 5.0) -> None:
    """SIGKILL every process ``match(pid)`` accepts until there is none (new ones can be
    forked while we look: repeat)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        found = False
        for pid in _pids():
            if pid != os.getpid() and match(pid) and not _is_zombie(pid):
                found = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not found:
            return
        time.sleep(0.005)


def _kill_tree(root: int) -> None:
    """SIGKILL every descendant of ``root`` (not ``root``), until there is none."""
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        children: dict[int, list[int]] = {}
        for pid in _pids():
            ppid = _ppid_of(pid)
            if ppid is not None:
                children.setdefault(ppid, []).append(pid)
        todo, found = list(children.get(root, [])), []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        live = [p for p in found if not _is_zombie(p)]
        if not live:
            return
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode().split()


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def _ppid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _uids_of(pid: int) -> tuple[int, ...] | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return tuple(int(x) for x in line.split()[1:])
    except OSError:
        pass
    return None


def _pidns_of(pid: int) -> int | None:
    for name in ("pid_for_children", "pid"):
        try:
            return os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            continue
    return None


def _workdir_base(drop_uid: bool) -> str | None:
    """Where working directories go: the usual temp dir, unless the dropped uid could not
    reach it (e.g. ``TMPDIR`` under ``/root``): then ``/tmp``."""
    base = tempfile.gettempdir()
    if not drop_uid:
        return None
    path = os.path.realpath(base)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return "/tmp"
        if path == "/":
            return base
        path = os.path.dirname(path)


def _take_uid() -> int:
    rng = random.SystemRandom()
    with _LOCK:
        while True:
            uid = rng.randrange(*UID_RANGE)
            if uid not in _UIDS_IN_USE:
                _UIDS_IN_USE.add(uid)
                return uid


def _remove_files_of(uid: int) -> None:
    """Remove what ``uid`` left at the top of the world-writable scratch directories."""
    for top in {*SCRATCH_DIRS, tempfile.gettempdir()}:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _config(python: str | None) -> _Config:
    """Probe (once) which mode works here with which interpreter."""
    forced = os.environ.get("DISTILL_SANDBOX", "auto")
    key = (python, forced)
    with _LOCK:
        if key in _CONFIGS:
            return _CONFIGS[key]
    if forced not in ("auto", "ns", "userns", "plain"):
        raise ValueError(f"DISTILL_SANDBOX={forced!r}: use ns, userns, plain or auto")
    root = os.geteuid() == 0
    modes = [forced] if forced != "auto" else ["ns"] * root + ["userns", "plain"]
    pythons = [python] if python else list(dict.fromkeys(
        p for p in (sys.executable, shutil.which("python3", path=SANDBOX_PATH)) if p))
    errors = []
    for mode in modes:
        for exe in pythons:
            cfg = _Config(mode, exe, root)
            try:
                res = _run(cfg, "print(6 * 7)", timeout=30, cpu_seconds=10, memory_mb=512,
                           max_output=4096, max_file_mb=1, max_processes=16)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{mode} with {exe}: {e}")
                continue
            if res.ok and res.stdout.strip() == "42":
                with _LOCK:
                    _CONFIGS[key] = cfg
                return cfg
            errors.append(f"{mode} with {exe}: exit {res.returncode}, {res.stderr.strip()[-300:]}")
    raise RuntimeError("the sandbox cannot run Python here: " + "; ".join(errors))
