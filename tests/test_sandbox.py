"""The program sandbox, with real subprocesses: limits, kills, isolation.

Programs find their host pid with ``os.readlink("/proc/self")`` (``os.getpid()`` is the pid
inside the sandbox's PID namespace) and write it into a world-writable directory under /tmp
that the test names in the program text (the sandbox may run as another uid, which cannot
reach pytest's 0700 ``tmp_path``). After ``run_program`` returns, those pids must be gone.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from distill.sandbox import run_program, sandbox_info

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

INFO = sandbox_info() if sys.platform.startswith("linux") else {}
SANDBOX_PY = Path(__file__).resolve().parents[1] / "distill" / "sandbox.py"


@pytest.fixture
def shared():
    """A directory the sandboxed program (maybe another uid) can write into."""
    path = Path(tempfile.mkdtemp(prefix="distill-sandbox-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def program(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def host_pids(folder: Path, prefix: str) -> list[int]:
    return [int(p.read_text()) for p in folder.glob(f"{prefix}*") if p.read_text().strip()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


WRITE_PID = """
def write_pid(name):
    tmp = '{d}/.%s' % name
    with open(tmp, 'w') as f:
        f.write(os.readlink('/proc/self'))
    os.rename(tmp, '{d}/' + name)
"""


def test_normal_program():
    res = run_program("x = 6 * 7\nprint(x)\nprint('done')\n")
    assert (res.stdout, res.stderr, res.returncode) == ("42\ndone\n", "", 0)
    assert not res.timed_out and res.killed_reason is None and not res.truncated and res.ok
    assert 0 < res.seconds < 5


def test_crash_and_exit_codes():
    res = run_program("def f():\n    return 1 / 0\nf()\n")
    assert res.returncode == 1 and not res.ok
    assert "ZeroDivisionError" in res.stderr and 'File "main.py", line 2' in res.stderr
    assert run_program("import sys\nprint('x')\nsys.exit(3)").returncode == 3
    assert run_program("if __name__ == '__main__':\n    print('main')").stdout == "main\n"
    assert run_program("def broken(:\n").returncode == 1


def test_infinite_loop_times_out():
    start = time.monotonic()
    res = run_program("while True:\n    pass\n", timeout=1, cpu_seconds=10)
    assert res.timed_out and res.killed_reason == "timeout" and res.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 3


def test_cpu_limit():
    res = run_program("while True:\n    pass\n", timeout=10, cpu_seconds=1)
    assert res.killed_reason == "cpu limit" and res.returncode == -signal.SIGXCPU
    assert not res.timed_out and res.seconds < 5


def test_ignoring_sigterm_does_not_help(shared):
    code = "import os, signal, time\n" + WRITE_PID.format(d=shared) + program("""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        write_pid('pid')
        print('ignoring', flush=True)
        time.sleep(60)
    """)
    start = time.monotonic()
    res = run_program(code, timeout=1)
    assert time.monotonic() - start < 3
    assert res.timed_out and res.stdout == "ignoring\n" and res.returncode == -signal.SIGKILL
    [pid] = host_pids(shared, "pid")
    assert not alive(pid)


def test_fork_bomb_is_bounded(shared):
    """Up to 300 forks, each child sleeps: the process limit stops it at max_processes."""
    code = "import os, time\n" + WRITE_PID.format(d=shared) + program("""
        n, error = 0, None
        for i in range(300):
            try:
                pid = os.fork()
            except OSError as e:
                error = e.errno
                break
            if pid == 0:
                write_pid('child-%d' % i)
                time.sleep(30)
                os._exit(0)
            n += 1
        print(n, error)
    """)
    start = time.monotonic()
    res = run_program(code, max_processes=16, timeout=10)
    assert time.monotonic() - start < 5
    forks, error = res.stdout.split()
    # 16 processes and threads in all, the program included (fewer in plain mode without a uid
    # drop, where the caller's own processes count too)
    assert int(forks) <= 15 and error == "11"  # EAGAIN
    pids = host_pids(shared, "child-")
    assert pids and not [p for p in pids if alive(p)]


def test_unbounded_allocation():
    start = time.monotonic()
    res = run_program("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", memory_mb=256)
    assert res.returncode == 1 and "MemoryError" in res.stderr
    assert time.monotonic() - start < 5


def test_output_is_capped():
    res = run_program("print('x' * 10_000_000)", max_output=1000)
    assert res.stdout.startswith("x" * 1000) and "[... output truncated at 1000 bytes]" in res.stdout
    assert len(res.stdout) < 1100 and res.truncated and res.killed_reason == "output limit"
    start = time.monotonic()
    res = run_program("import sys\nwhile True:\n    print('y' * 100)\n    sys.stderr.write('e')\n",
                      max_output=50_000, timeout=10)
    assert time.monotonic() - start < 3  # killed at the cap, not at the timeout
    assert res.killed_reason == "output limit" and res.returncode == -signal.SIGKILL
    assert not res.timed_out and len(res.stdout) < 50_100 and len(res.stderr) <= 50_100


def test_no_network():
    """A listening socket on the host's 127.0.0.1: the program must not reach it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        res = run_program(program(f"""
            import socket
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=2)
                print('connected')
            except OSError as e:
                print('blocked', e.errno)
        """))
        assert res.stdout.startswith("blocked"), res
        with pytest.raises(BlockingIOError):
            server.accept()
    # a network namespace has only a down loopback: ENETUNREACH; the plain prelude: EPERM
    expected = "1" if INFO["mode"] == "plain" else "101"
    assert res.stdout.split()[1] == expected


def test_environment_has_no_secrets(monkeypatch):
    monkeypatch.setenv("DISTILL_SECRET", "x-secret-value")
    res = run_program("import os, json\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(res.stdout)
    assert "DISTILL_SECRET" not in env and "x-secret-value" not in res.stdout
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}


def test_fresh_working_directory_removed():
    code = ("import os\nprint(os.getcwd())\nprint(sorted(os.listdir()))\n"
            "open('scratch.txt', 'w').write('data')\nprint(sorted(os.listdir()))")
    first, second = run_program(code), run_program(code)
    cwd1, before, after = first.stdout.splitlines()
    assert before == "['main.py']" and after == "['main.py', 'scratch.txt']"
    cwd2 = second.stdout.splitlines()[0]
    assert cwd1 != cwd2
    assert not os.path.exists(cwd1) and not os.path.exists(cwd2)


def test_writes_outside_the_working_directory(shared):
    """With a uid drop (root callers), the program cannot write into the caller's directories
    and what it leaves at the top of /tmp is removed afterwards. Without one (non-root
    callers), the sandbox does not stop such writes: it has no mount namespace."""
    private = Path(tempfile.mkdtemp(prefix="distill-sandbox-private-"))
    private.chmod(0o755)  # a directory of the caller's, like most: others may only read it
    top = Path(tempfile.gettempdir()) / f"distill-sandbox-escape-{os.getpid()}-{time.time_ns()}"
    try:
        res = run_program(program(f"""
            for path in ['{private}/escape', '{top}']:
                try:
                    with open(path, 'w') as f:
                        f.write('x')
                    print('written')
                except OSError as e:
                    print('refused', e.errno)
        """))
        inside, at_top = res.stdout.splitlines()
        assert at_top == "written"  # /tmp is world-writable ...
        if INFO["drop_uid"]:
            assert inside == "refused 13"  # EACCES
            assert not (private / "escape").exists()
            assert not top.exists()  # ... but what the sandbox uid left there is removed
        else:
            assert inside == "written" and (private / "escape").exists() and top.exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        top.unlink(missing_ok=True)


DETACH = """
import os, time
""" + WRITE_PID + """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        write_pid('detached')
        time.sleep(60)
        os._exit(0)
    os._exit(0)
for _ in range(500):
    if os.path.exists('{d}/detached'):
        break
    time.sleep(0.01)
print('parent done', flush=True)
"""


@pytest.mark.parametrize("then", ["exit", "hang"])
def test_detached_child_is_killed(shared, then):
    """Double fork + setsid: the grandchild leaves the process group and session. It must not
    outlive the run, whether the program then exits or hangs past the timeout."""
    code = DETACH.format(d=shared) + ("time.sleep(60)\n" if then == "hang" else "")
    start = time.monotonic()
    res = run_program(code, timeout=1.5)
    assert time.monotonic() - start < 4
    assert res.stdout == "parent done\n"
    assert res.timed_out == (then == "hang")
    [pid] = host_pids(shared, "detached")
    assert not alive(pid)


def test_concurrent_runs():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_program(f"print({i} * 2)"), range(12)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(12)]


def test_plain_mode(monkeypatch, shared):
    """The fallback without namespaces still kills detached children and refuses sockets
    (through a prelude a program could undo)."""
    monkeypatch.setenv("DISTILL_SANDBOX", "plain")
    assert sandbox_info()["mode"] == "plain"
    res = run_program("import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n"
                      "    print('refused', e.errno)")
    assert res.stdout == "refused 1\n"
    res = run_program(DETACH.format(d=shared) + "time.sleep(60)\n", timeout=1)
    assert res.timed_out
    [pid] = host_pids(shared, "detached")
    assert not alive(pid)


UNPRIVILEGED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
print(json.dumps([sandbox.sandbox_info(), sandbox.run_program(sys.argv[2], timeout=2).stdout]))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to become an unprivileged caller")
def test_unprivileged_caller(shared):
    """The sandbox run by a non-root caller (uid 65534): user namespaces instead of the uid
    drop; network, process limit and detached children still handled."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if not python:
        pytest.skip("no python3 reachable by an unprivileged user")
    code = DETACH.format(d=shared) + program("""
        import socket
        try:
            socket.create_connection(('127.0.0.1', 9), timeout=1)
        except OSError as e:
            print('net', e.errno)
        n = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            print('forks', n, e.errno)
    """)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          python, "-I", "-c", UNPRIVILEGED, str(SANDBOX_PY), code],
                         capture_output=True, text=True, timeout=30, cwd="/", check=False)
    if out.returncode != 0 and "cannot run Python here" in out.stderr:
        pytest.skip(out.stderr.strip()[-300:])
    assert out.returncode == 0, out.stderr
    info, stdout = json.loads(out.stdout)
    assert not info["drop_uid"] and info["mode"] in ("userns", "plain")
    lines = stdout.splitlines()
    assert lines[0] == "parent done"
    assert lines[1] == ("net 1" if info["mode"] == "plain" else "net 101")
    forks = lines[2].split()
    assert forks[0] == "forks" and int(forks[1]) < 64 and forks[2] == "11"
    [pid] = host_pids(shared, "detached")
    assert not alive(pid)
