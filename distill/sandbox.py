"""Run a short, untrusted Python program (a teacher's program-of-thought) and capture its output.

``run_program(code)`` runs ``code`` as ``main.py`` in a fresh ``python3 -I`` child and returns
an ``ExecResult``. What the program sees, in the isolating modes (``bwrap``, ``ns``,
``userns``, below):

* a filesystem of its own: the system folders (``/usr``, ``/bin``, ``/lib*``, ``/etc``, and
  the interpreter's prefix and venv) read-only, a fresh ``/proc`` and a ``/dev`` with only
  ``null``, ``zero``, ``full``, ``random`` and ``urandom``; an empty writable tmpfs of
  ``disk_mb`` as ``/tmp``, its working directory and ``HOME`` (``/dev/shm`` points into it).
  The host's ``/tmp``, ``/run``, ``/home``, ``/root``, ``/work``, ``/var`` and every data
  folder are not there, so neither is the input data nor any path Unix socket;
* its own PID namespace (it sees only its own processes: no other command line), IPC
  namespace (SysV and POSIX IPC objects die with the run) and network namespace (no
  network);
* a uid of its own and no capabilities: a root caller's child switches to a fresh
  unprivileged uid (random, above 10^9); a non-root caller's runs in a user namespace;
* limits: ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL a second later), ``RLIMIT_AS`` =
  ``memory_mb`` per process (allocations fail with ``MemoryError``), ``RLIMIT_FSIZE``,
  ``RLIMIT_NOFILE``, no core files, a wall-clock timeout and an output cap (past either,
  everything the program started is SIGKILLed); and a total memory cap for the whole run,
  ``total_memory_mb``: a cgroup v2 group with ``memory.max`` and ``pids.max`` where this
  process may create one, else ``RLIMIT_NPROC`` = ``total_memory_mb // memory_mb``
  processes (threads count) of ``memory_mb`` each (``sandbox_info()["memory"]`` says which;
  in plain mode without a uid drop, where ``RLIMIT_NPROC`` counts all the caller's
  processes, memory is capped per process only);
* stdin from ``/dev/null`` and only ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR`` in its
  environment: none of the caller's variables (API keys, tokens) reach it.

Modes, picked once per process by a probe (``sandbox_info()`` says which; the environment
variable ``DISTILL_SANDBOX`` = ``bwrap``/``ns``/``userns``/``plain`` forces one):

``bwrap``
    bubblewrap (``bwrap`` on ``PATH``; the set-up installs it where apt exists) builds the
    namespaces and the filesystem; a root caller runs it as the program's fresh uid. bwrap
    reports a program killed by signal N as exit status 128 + N: such statuses read as -N.
``ns`` (the caller is root) and ``userns`` (unprivileged user namespaces)
    the same, by hand: ``unshare`` in the child, then the namespace's pid 1 (the prelude
    below) mounts the filesystem, ``pivot_root``s into it and drops the uid (``ns``) or
    enters a nested user namespace without capabilities (``userns``) before the program runs.
``plain`` (none of the above works)
    no namespaces: the program sees the host's filesystem, ``/proc`` (other processes'
    command lines), IPC and path Unix sockets; ``socket.socket`` is refused in Python only
    (``ctypes`` or a subprocess gets round it); a fresh temporary folder is its working
    directory. With a uid drop it can write only world-writable places, and what it leaves
    at the top of ``/tmp``, ``/var/tmp`` and ``/dev/shm`` is removed. The probe says so on
    stderr, once.

After each run every process of the run is SIGKILLed (by uid after a uid drop, else by its
PID namespace, which dies with its pid 1) and the tmpfs is gone with the mount namespace.

What it does NOT stop (it guards against buggy, greedy or nosy programs; it is not a
security boundary against a determined attacker):

* no seccomp filter: every syscall is allowed, kernel bugs are reachable; a program may
  create user namespaces of its own (they hold nothing more than it sees);
* the read-only system folders are readable (``/etc`` included), and ``/proc`` still shows
  host-wide files (``/proc/meminfo``, ``/proc/cpuinfo``);
* memory and disk bandwidth, and CPU time beyond ``RLIMIT_CPU`` per process;
* without a cgroup, the total memory is a per-process cap times a process count, so a
  program that needs threads gets few of them;
* if the calling Python process is SIGKILLed mid-run, ``PR_SET_PDEATHSIG`` ends the run's
  namespaces; in ``plain`` mode a detached descendant may survive.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
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

from distill.log import log

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
CLONE = {"newns": 0x00020000, "ipc": 0x08000000, "user": 0x10000000, "pid": 0x20000000,
         "net": 0x40000000}
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
UID_RANGE = (1_000_000_000, 2_000_000_000)
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
READ_CHUNK = 65536
# processes of the program's uid that are not the program: they count in RLIMIT_NPROC
HELPERS = {"bwrap": 2, "ns": 0, "userns": 2, "plain": 1}
MODES = ("bwrap", "ns", "userns", "plain")

# Runs in the child as `python3 -I -c PRELUDE <mode> <fd> <spec>`: fd holds the program, spec
# (JSON) is what the ns modes mount. Kept small: it is part of every run's start-up time.
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

def _check(ret, what):
    if ret != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))

def _filesystem(libc, spec):
    """In pid 1 of the new namespaces: build the root, pivot into it, /tmp as the cwd."""
    def mount(src, dst, fstype, flags, data=None):
        _check(libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                          data and data.encode()), "mount " + dst)
    RO, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC = 1, 2, 4, 8, 32, 4096, 16384
    mount(None, "/", None, REC | (1 << 18))  # MS_PRIVATE: nothing leaks back to the host
    root = "/tmp"  # mounted over in this namespace only
    mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=1m,mode=0755")
    for path in spec["binds"]:
        target = root + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
            continue
        os.makedirs(target, exist_ok=True)
        mount(path, target, None, BIND | REC)
        st = os.statvfs(path).f_flag  # keep the flags a user namespace may not drop
        keep = (st & (NODEV | NOEXEC | 1024 | 2048)) | ((1 << 21) if st & 4096 else 0)
        mount(None, target, None, REMOUNT | BIND | RO | NOSUID | keep)
    os.mkdir(root + "/dev")
    mount("tmpfs", root + "/dev", "tmpfs", NOSUID | NOEXEC, "size=64k,mode=0755")
    for name in spec["devices"]:
        open(root + "/dev/" + name, "w").close()
        mount("/dev/" + name, root + "/dev/" + name, None, BIND)
    for name, to in (("shm", "/tmp"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(to, root + "/dev/" + name)
    mount(None, root + "/dev", None, REMOUNT | BIND | RO | NOSUID | NOEXEC)
    os.mkdir(root + "/proc")
    mount("proc", root + "/proc", "proc", NOSUID | NODEV | NOEXEC)
    os.mkdir(root + "/tmp")
    owner = spec["uid"] or 0
    mount("tmpfs", root + "/tmp", "tmpfs", NOSUID | NODEV,
          "size=%d,mode=0700,uid=%d,gid=%d" % (spec["disk"], owner, owner))
    mount(None, root, None, REMOUNT | RO | NOSUID | NODEV)
    os.chdir(root)
    _check(libc.syscall(spec["pivot_root"], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", 2), "umount the host's root")  # MNT_DETACH
    os.chdir("/tmp")

def _drop(libc, spec):
    """In the program's process: no way back to the capabilities that built the filesystem."""
    uid = spec["uid"]
    if uid is not None:  # the ns mode: root switches to the run's uid, losing every capability
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # userns: a nested user namespace as uid 1000, then clear the capabilities
        _check(libc.unshare(0x10000000), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", "1000 0 1"), ("gid_map", "1000 0 1")):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
        import ctypes
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS

def _sandbox(mode, spec):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if mode in ("ns", "userns"):
        r, w = os.pipe()
        pid = os.fork()
        if pid:  # the relay, outside the new pid namespace
            os.close(w)
            os.waitpid(pid, 0)
            data = os.read(r, 32)
            _exit_like(int(data) if data else 9)
        os.close(r)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: die with the relay
        _filesystem(libc, spec)
        pid = os.fork()
        if pid:  # pid 1 of the namespace: reap orphans until the program exits, then go
            while True:
                p, status = os.wait()
                if p == pid:
                    break
            os.write(w, b"%d" % status)
            os._exit(0)  # the kernel kills whatever is left in the namespace
        os.close(w)
        _drop(libc, spec)
    elif mode == "plain":
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

_mode, _fd = sys.argv[1], int(sys.argv[2])
os.environ.pop("PWD", None)  # bwrap's --chdir sets it
_sandbox(_mode, __import__("json").loads(sys.argv[3]) if _mode in ("ns", "userns") else None)
with os.fdopen(_fd, "rb") as _f:
    _source = _f.read()
with open("main.py", "wb") as _f:
    _f.write(_source)
del _sandbox, _exit_like, _check, _filesystem, _drop, _mode, _fd, _f
sys.argv = ["main.py"]
import types as _types
_main = _types.ModuleType("__main__")
_main.__file__ = "main.py"
sys.modules["__main__"] = _main
try:
    _code = compile(_source, "main.py", "exec")
    del _source
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
    kernel did ("cpu limit", "memory limit"); ``truncated`` says that stdout or stderr hit
    ``max_output``."""

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
    mode: str  # "bwrap" | "ns" | "userns" | "plain"
    python: str
    drop_uid: bool  # the caller is root: the program gets a uid of its own
    binds: tuple[str, ...]  # read-only folders (or symlinks) of the program's filesystem
    cgroup: str | None  # the cgroup v2 folder runs get their groups in, if any

    @property
    def memory(self) -> str:
        """How the run's total memory is capped: a cgroup, or RLIMIT_NPROC processes of
        RLIMIT_AS each; "per process" in plain mode without a uid drop, where RLIMIT_NPROC
        counts all the caller's processes and cannot be that small."""
        if self.cgroup:
            return "cgroup"
        return "per process" if self.mode == "plain" and not self.drop_uid else "rlimit"


_LOCK = threading.Lock()
_CONFIGS: dict[tuple, _Config] = {}
_UIDS_IN_USE: set[int] = set()
_LIBC = ctypes.CDLL(None, use_errno=True)


def sandbox_info(python: str | None = None) -> dict:
    """How runs are isolated here: ``{"mode": "bwrap" | "ns" | "userns" | "plain",
    "drop_uid": bool, "python": interpreter, "memory": "cgroup" | "rlimit" | "per process",
    "filesystem": [read-only folders]}`` (see the module doc; ``filesystem`` is empty in
    plain mode)."""
    cfg = _config(python)
    return {"mode": cfg.mode, "drop_uid": cfg.drop_uid, "python": cfg.python,
            "memory": cfg.memory, "filesystem": list(cfg.binds) if cfg.mode != "plain" else []}


def run_program(code: str, *, timeout: float = 5.0, cpu_seconds: int = 5, memory_mb: int = 512,
                total_memory_mb: int = 2048, disk_mb: int = 64, max_output: int = 64_000,
                max_file_mb: int = 16, max_processes: int = 64,
                python: str | None = None) -> ExecResult:
    """Run ``code`` as a Python program in the sandbox; see the module doc. ``memory_mb``
    caps each process, ``total_memory_mb`` all of them together, ``disk_mb`` the tmpfs;
    ``max_output`` caps stdout and stderr each (bytes); ``max_processes`` caps the program's
    processes and threads (without a cgroup, also ``total_memory_mb // memory_mb``);
    ``python`` is the interpreter (default: this one, or ``python3`` on ``PATH`` where this
    one does not run in the sandbox)."""
    cfg = _config(python)
    return _run(cfg, code, timeout=timeout, cpu_seconds=cpu_seconds, memory_mb=memory_mb,
                total_memory_mb=total_memory_mb, disk_mb=disk_mb, max_output=max_output,
                max_file_mb=max_file_mb, max_processes=max_processes)


def _run(cfg: _Config, code: str, *, timeout: float, cpu_seconds: int, memory_mb: int,
         total_memory_mb: int, disk_mb: int, max_output: int, max_file_mb: int,
         max_processes: int) -> ExecResult:
    uid = _take_uid() if cfg.drop_uid else None
    if cfg.memory == "rlimit":
        max_processes = min(max_processes, max(1, total_memory_mb // memory_mb))
    proc = workdir = group = program = None
    try:
        workdir = _plain_workdir(uid) if cfg.mode == "plain" else None
        group = _make_group(cfg.cgroup, total_memory_mb, max_processes + 2)  # + relay, init
        program = os.memfd_create("main.py")
        os.write(program, code.encode("utf-8", errors="surrogateescape"))
        os.lseek(program, 0, os.SEEK_SET)
        limits = [(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1)),
                  (resource.RLIMIT_AS, (memory_mb << 20,) * 2),
                  (resource.RLIMIT_FSIZE, (max_file_mb << 20,) * 2),
                  (resource.RLIMIT_NPROC, (max_processes + HELPERS[cfg.mode],) * 2),
                  (resource.RLIMIT_NOFILE, (256, 256)),
                  (resource.RLIMIT_CORE, (0, 0))]
        home = workdir or "/tmp"
        env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
        argv = _argv(cfg, program, uid, disk_mb)
        join = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY) if group else None
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir or "/", env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                close_fds=True, pass_fds=(program,),
                preexec_fn=lambda: _child_setup(cfg.mode, uid, limits, join))  # noqa: PLW1509
        finally:
            if join is not None:
                os.close(join)
        pidns = _pidns_of(proc.pid) if cfg.mode in ("ns", "userns") and uid is None else None
        out, err, timed_out, reason, truncated = _communicate(proc, start + timeout, max_output)
        _kill_all(proc, cfg.mode, uid, pidns)
        seconds = time.monotonic() - start
        returncode = proc.returncode
        if cfg.mode == "bwrap" and returncode is not None and 128 < returncode <= 128 + 64:
            returncode = 128 - returncode  # bwrap reports "killed by signal N" as exit 128 + N
        if reason is None and returncode == -signal.SIGXCPU:
            reason = "cpu limit"
        if reason is None and returncode is not None and returncode < 0 and group \
                and _oom_kills(group):
            reason = "memory limit"
        return ExecResult(_text(out, "stdout" in truncated, max_output),
                          _text(err, "stderr" in truncated, max_output), returncode,
                          timed_out, round(seconds, 4), reason, bool(truncated))
    finally:
        if program is not None:
            os.close(program)
        if proc is not None and proc.returncode is None:  # an exception above: still clean up
            _kill_all(proc, cfg.mode, uid, None)
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
        if group:
            _remove_group(group)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            if cfg.mode == "plain":
                _remove_files_of(uid)
            with _LOCK:
                _UIDS_IN_USE.discard(uid)


def _argv(cfg: _Config, program: int, uid: int | None, disk_mb: int) -> list[str]:
    prelude = [cfg.python, "-I", "-c", PRELUDE, cfg.mode, str(program)]
    if cfg.mode == "plain":
        return prelude
    if cfg.mode in ("ns", "userns"):
        spec = {"binds": cfg.binds, "devices": DEVICES, "disk": disk_mb << 20,
                "uid": uid if cfg.mode == "ns" else None,
                "pivot_root": SYS_PIVOT_ROOT.get(platform.machine(), 155)}
        return prelude + [json.dumps(spec)]
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    for path in cfg.binds:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        else:
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--size", str(64 << 10), "--tmpfs", "/dev"]
    for name in DEVICES:
        argv += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for name, to in (("shm", "/tmp"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        argv += ["--symlink", to, f"/dev/{name}"]
    argv += ["--remount-ro", "/dev", "--size", str(disk_mb << 20), "--perms", "0700",
             "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp", "--"]
    return [shutil.which("bwrap", path=SANDBOX_PATH) or "bwrap", *argv[1:], *prelude]


def _child_setup(mode: str, uid: int | None, limits: list, join: int | None) -> None:
    """In the forked child, before exec: cgroup, namespaces, uid drop, limits. Only calls
    functions of modules already imported (it runs in a fork of a multi-threaded process)."""
    if join is not None:
        os.write(join, b"0")
    if mode == "ns":  # root keeps its capabilities until the prelude has built the filesystem
        _unshare(CLONE["newns"] | CLONE["ipc"] | CLONE["net"] | CLONE["pid"])
    elif uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if mode == "userns":  # after the drop: the namespace then belongs to the new uid
        outer_uid, outer_gid = os.geteuid(), os.getegid()
        _LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change made /proc/self root's
        _unshare(CLONE["user"] | CLONE["newns"] | CLONE["ipc"] | CLONE["net"] | CLONE["pid"])
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {outer_uid} 1"),
                           ("gid_map", f"0 {outer_gid} 1")):
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
            os.write(fd, text.encode())
            os.close(fd)
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


def _plain_workdir(uid: int | None) -> str:
    """The plain mode's working directory: a fresh folder in the usual temp dir (``/tmp``
    where a dropped uid could not reach that one, e.g. ``TMPDIR`` under ``/root``)."""
    base = tempfile.gettempdir()
    if uid is not None:
        path = os.path.realpath(base)
        while path != "/" and os.stat(path).st_mode & 0o001:
            path = os.path.dirname(path)
        if not os.stat(path).st_mode & 0o001:
            base = "/tmp"
    workdir = tempfile.mkdtemp(prefix="distill-sandbox-", dir=base)
    if uid is not None:
        os.chown(workdir, uid, uid)
    return workdir


def _cgroup_parent() -> str | None:
    """The cgroup v2 folder of this process if runs can get groups with their own
    ``memory.max`` and ``pids.max`` under it (the memory and pids controllers delegated
    to its children), else None."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next(line[3:].strip() for line in f if line.startswith("0::"))
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
        top = next(m[4] for m in mounts if m[m.index("-") + 1] == "cgroup2")
        parent = os.path.join(top, rel.lstrip("/"))
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            if not {"memory", "pids"} <= set(f.read().split()):
                return None
        probe = _make_group(parent, 64, 8)
        _remove_group(probe)
        return parent
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _make_group(parent: str | None, memory_mb: int, pids: int) -> str | None:
    if parent is None:
        return None
    path = os.path.join(parent, f"distill-sandbox-{os.getpid()}-{random.getrandbits(48):x}")
    os.mkdir(path)
    try:
        for name, value in (("memory.max", memory_mb << 20), ("memory.swap.max", 0),
                            ("pids.max", pids)):
            if name != "memory.swap.max" or os.path.exists(os.path.join(path, name)):
                with open(os.path.join(path, name), "w") as f:
                    f.write(str(value))
    except OSError:
        os.rmdir(path)
        raise
    return path


def _oom_kills(group: str) -> int:
    try:
        with open(os.path.join(group, "memory.events")) as f:
            return int(dict(line.split() for line in f).get("oom_kill", 0))
    except (OSError, ValueError):
        return 0


def _remove_group(group: str) -> None:
    """Remove a run's cgroup once its processes are gone (they were killed before)."""
    end = time.monotonic() + 5.0
    while True:
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > end:
                return
            time.sleep(0.005)


def _binds(python: str) -> tuple[str, ...]:
    """The read-only part of the program's filesystem: the system folders and the
    interpreter's prefix (and venv, for this interpreter)."""
    extra = [os.path.dirname(os.path.dirname(os.path.realpath(python)))]
    if python == sys.executable:
        extra += [sys.prefix, sys.base_prefix, sys.exec_prefix]
    paths = [p for p in SYSTEM_DIRS if os.path.lexists(p)]
    for path in map(os.path.abspath, extra):
        if path != "/" and not any(path == p or path.startswith(p.rstrip("/") + "/")
                                   for p in paths):
            paths.append(path)
    return tuple(paths)


def _config(python: str | None) -> _Config:
    """Probe (once) which mode works here with which interpreter; say once what a weaker
    mode does not contain."""
    forced = os.environ.get("DISTILL_SANDBOX", "auto")
    key = (python, forced)
    with _LOCK:
        if key in _CONFIGS:
            return _CONFIGS[key]
    if forced not in ("auto", *MODES):
        raise ValueError(f"DISTILL_SANDBOX={forced!r}: use {', '.join(MODES)} or auto")
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap", path=SANDBOX_PATH)
    modes = [forced] if forced != "auto" else (
        ["bwrap"] * bool(bwrap) + ["ns"] * root + ["userns", "plain"])
    pythons = [python] if python else list(dict.fromkeys(
        p for p in (sys.executable, shutil.which("python3", path=SANDBOX_PATH)) if p))
    cgroup = _cgroup_parent()
    errors = [] if bwrap else ["bwrap: not installed"]
    for mode in modes:
        for exe in pythons:
            cfg = _Config(mode, exe, root, _binds(exe), cgroup)
            try:
                res = _run(cfg, "print(6 * 7)", timeout=30, cpu_seconds=10, memory_mb=512,
                           total_memory_mb=2048, disk_mb=1, max_output=4096, max_file_mb=1,
                           max_processes=16)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{mode} with {exe}: {e}")
                continue
            if res.ok and res.stdout.strip() == "42":
                with _LOCK:
                    _CONFIGS[key] = cfg
                if mode == "plain" and forced == "auto":
                    why = [e for e in errors if not e.startswith("plain ")][-1]
                    log(f"sandbox: neither bubblewrap nor Linux namespaces work here "
                        f"({why[:200]}): programs run without a filesystem of their "
                        f"own and see the host's files, processes, IPC and Unix sockets; only "
                        f"Python's socket module is refused")
                return cfg
            errors.append(f"{mode} with {exe}: exit {res.returncode}, {res.stderr.strip()[-300:]}")
    raise RuntimeError("the sandbox cannot run Python here: " + "; ".join(errors))
