"""The ray executor against the local one, on a real Ray cluster started here on 127.0.0.1: a
head and a worker node (1 CPU each, separate processes), CPU only.

Both executors must write the same datasets: generate (tiny model, hf backend, greedy), the
filter pipeline, and distributed dedupe (exact and MinHash) on planted duplicates. A worker
node killed mid-run and a killed driver must leave a folder that a rerun completes, with no
duplicate rows. The nodes run under a HOME where a run of distill on a single-machine Ray
cluster of its own came first, so Ray state such a run left there (a token that makes later
clusters refuse drivers) fails every test here.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from processes import process_group, start_group, stop_group

from distill import io
from distill.datagen import generate
from distill.datagen.plan import row_schema
from distill.errors import DistillError
from distill.filters.pipeline import run_filter

pytestmark = pytest.mark.ray
slow = pytest.mark.slow  # the cluster alone takes 20-40 s to start on 2 busy cores

RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` script of this Python
STORE = "--object-store-memory=150000000"


class Cluster:
    """A Ray head node and worker nodes, each a ``ray start --block`` process group, with HOME
    ``home``; this process is the driver. If it fails to start, the nodes started so far are
    stopped."""

    def __init__(self, home: Path):
        import ray

        self.env = {**os.environ, "HOME": str(home), "HF_HOME": hf_home()}
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: it holds sockets
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        try:
            head = self._start("--head", f"--port={self.port}", "--include-dashboard=false",
                               f"--temp-dir={self.temp}", "--disable-usage-stats")
            deadline = time.time() + 60
            while not ray.is_initialized():
                assert head.poll() is None, "the Ray head node exited"
                try:
                    ray.init(address=self.address, logging_level="WARNING")
                except ConnectionError:
                    assert time.time() < deadline, "the Ray head node did not start"
                    time.sleep(0.5)
            self.add_worker()
        except BaseException:
            self.stop()
            raise

    def _start(self, *args) -> subprocess.Popen:
        node = start_group([*RAY, "start", "--block", "--num-cpus=1", STORE, *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        self.nodes.append(node)
        return node

    def add_worker(self) -> subprocess.Popen:
        before = self.alive_nodes()
        worker = self._start(f"--address={self.address}")
        deadline = time.time() + 60
        while self.alive_nodes() <= before:
            assert time.time() < deadline and worker.poll() is None, "worker node did not join"
            time.sleep(0.5)
        return worker

    def alive_nodes(self) -> int:
        import ray

        return sum(n["Alive"] for n in ray.nodes())

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL to the node and every process it started; returns once none is left."""
        stop_group(node)

    def settle(self) -> None:
        """Wait until Ray has noticed every killed node (its health check takes a while), so
        that later tests are not scheduled onto one."""
        deadline = time.time() + 120
        while self.alive_nodes() > sum(n.poll() is None for n in self.nodes):
            assert time.time() < deadline, "Ray did not notice a killed node"
            time.sleep(1)

    def stop(self) -> None:
        """Disconnect, then kill every node (a graceful stop takes a minute; nothing here needs
        one); fails if a process of theirs is still running."""
        import ray

        try:
            ray.shutdown()
        finally:
            for node in self.nodes:
                self.kill(node)
            shutil.rmtree(self.temp, ignore_errors=True)


def hf_home() -> str:
    """The Hugging Face cache of this process (it defaults to one under HOME)."""
    from huggingface_hub import constants

    return constants.HF_HOME


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A HOME where ``distill filter --executor ray`` has run on a single-machine cluster that
    it started itself (no address, no cluster running), in a process that also reports the
    Ray settings of its environment before and after."""
    pytest.importorskip("ray")
    home = tmp_path_factory.mktemp("home")
    work = tmp_path_factory.mktemp("local-ray")
    folder = dataset(work / "in", planted_rows(60), shards=2)
    config = work / "filter.yaml"
    config.write_text(json.dumps({"stages": [{"dedupe": {"method": "exact"}}]}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with process_group([sys.executable, "-c", LOCAL_RUN, str(home / "ray-settings.json"),
                        "filter", str(folder), str(work / "out"), "--config", str(config),
                        "--executor", "ray"], env={**env, "HOME": str(home), "HF_HOME": hf_home()},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as run:
        _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    return home


# The distill command line after the first argument, in a process that writes the RAY_
# settings of its environment before and after the command to the file the first one names.
LOCAL_RUN = """
import json, os, sys
from pathlib import Path
from distill.cli import main
ray_settings = lambda: {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
before = ray_settings()
code = main(sys.argv[2:])
Path(sys.argv[1]).write_text(json.dumps({"before": before, "after": ray_settings()}))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def cluster(home):
    c = Cluster(home)
    try:
        yield c
    finally:
        c.stop()


@slow
def test_a_local_ray_cluster_leaves_no_ray_state_behind(home):
    assert not (home / ".ray" / "auth_token").exists()  # Ray's own place for a token
    settings = json.loads((home / "ray-settings.json").read_text())
    assert settings["after"] == settings["before"]


def problems_file(folder: Path, n: int) -> Path:
    path = folder / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i} times {i + 1}?",
                                        "answer": str(i * (i + 1))}) + "\n" for i in range(n)))
    return path


def generated(out: Path, model: str, source: Path, **kw):
    args = {"model": model, "backend": "hf", "temperature": 0, "max_tokens": 16,
            "batch_size": 3, "n": 2, "progress": False}
    return generate("gsm8k-cot", str(source), str(out), **{**args, **kw})


@slow
def test_generate_on_ray_writes_the_local_dataset(cluster, tiny_model, tmp_path):
    source = problems_file(tmp_path, 8)
    local = generated(tmp_path / "local", tiny_model, source)
    on_ray = generated(tmp_path / "ray", tiny_model, source, executor="ray",
                       ray_address=cluster.address)
    assert (on_ray.rows_written, local.rows_written) == (16, 16)
    # the same shards, in the same order, holding the same rows
    a, b = io.shard_paths(tmp_path / "local"), io.shard_paths(tmp_path / "ray")
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 3  # 8 prompts, batches of 3
    key = ("id", "source_id", "sample_index", "completion", "tokens", "finish_reason", "backend")
    rows = [[tuple(r[k] for k in key) for r in io.read_rows(tmp_path / d)] for d in ("local", "ray")]
    assert rows[0] == rows[1] and len({r[0] for r in rows[1]}) == 16
    manifest = io.read_manifest(tmp_path / "ray")
    assert manifest["status"] == "complete" and manifest["rows"] == 16
    assert manifest["backend"] == "hf"
    again = generated(tmp_path / "ray", tiny_model, source, executor="ray",
                      ray_address=cluster.address)
    assert (again.rows_reused, again.rows_written) == (16, 0)


@slow
def test_tool_integrated_generate_on_ray_writes_the_local_dataset(cluster, tmp_path):
    """Each worker follows its rows through their code blocks (``distill.datagen.turns``) as
    the local executor does: the same traces and tool calls."""
    from tir_teacher import build_tir_teacher, prompt_file

    question = "Tom has 3 apples and buys 5 more. How many?"
    teacher = str(build_tir_teacher(tmp_path / "teacher", [question]))
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "question": question}) + "\n"
                              for i in range(3)))
    prompt = prompt_file(tmp_path, max_tool_calls=2)
    for name, ray in (("local", {}), ("ray", {"executor": "ray", "ray_address": cluster.address})):
        generate(str(prompt), str(source), str(tmp_path / name), model=teacher, backend="hf",
                 batch_size=2, progress=False, **ray)
    key = ("id", "completion", "tool_calls", "finish_reason", "tokens")
    rows = [sorted(tuple(json.dumps(r[k]) for k in key) for r in io.read_rows(tmp_path / d))
            for d in ("local", "ray")]
    assert rows[0] == rows[1] and len(rows[1]) == 3
    assert all('"output": "42"' in r[2] for r in rows[1])


def cli_generate(source: Path, out: Path, model: str, address: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "generate", "--prompt", "gsm8k-cot",
            "--data", str(source), "--out", str(out), "--teacher", model, "--backend", "hf",
            "--n", "1", "--temperature", "0", "--max-tokens", "24", "--batch-size", "1",
            "--no-progress",
            "--executor", "ray", "--ray-address", address]


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while len(io.shard_paths(out)) < n:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, f"fewer than {n} shards in 180 s"
        time.sleep(0.05)


@pytest.fixture
def extra_node(cluster):
    """A third node, for the test to lose; afterwards it is gone and Ray knows it, however the
    test ended, so that later tests are not scheduled onto it."""
    node = cluster.add_worker()
    yield node
    cluster.kill(node)
    cluster.settle()


@slow
def test_lost_worker_node_and_killed_driver_then_rerun_completes(cluster, extra_node, tiny_model,
                                                                 tmp_path):
    source = problems_file(tmp_path, 40)
    out = tmp_path / "ray"
    with process_group(cli_generate(source, out, tiny_model, cluster.address),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as driver:
        wait_for_shards(out, 3, driver)
        cluster.kill(extra_node)  # the engine on it dies with whatever batch it held
        wait_for_shards(out, 8, driver)  # Ray restarts the lost work elsewhere
        stop_group(driver)  # SIGKILL
    partial = io.read_rows(out)
    assert 8 <= len(partial) < 40 and len({r["id"] for r in partial}) == len(partial)
    assert io.read_manifest(out)["status"] == "running"

    rerun = subprocess.run(cli_generate(source, out, tiny_model, cluster.address),
                           check=False, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"reusing {len(partial)} already there" in rerun.stderr
    generated(tmp_path / "local", tiny_model, source, n=1, max_tokens=24, batch_size=1)
    resumed, local = io.read_rows(out), io.read_rows(tmp_path / "local")
    assert len(resumed) == len({r["id"] for r in resumed}) == 40  # no duplicates
    key = lambda r: (r["id"], r["completion"], r["tokens"], r["finish_reason"])
    assert sorted(map(key, resumed)) == sorted(map(key, local))
    assert io.read_manifest(out)["status"] == "complete"


def planted_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` texts of random words, a fifth of them near-copies (1 of 60-100 words changed:
    Jaccard >= 0.85) and a tenth case/whitespace copies of earlier ones, each with a ``score``
    (some missing)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2000)]
    texts: list[str] = []
    for i in range(n):
        if i > 10 and i % 5 == 0:
            words = texts[int(rng.integers(0, i))].split()
            words[int(rng.integers(0, len(words)))] = f"new{i}"
            texts.append(" ".join(words))
        elif i > 10 and i % 10 == 3:
            texts.append("  " + texts[int(rng.integers(0, i))].upper().replace(" ", "\n "))
        else:
            texts.append(" ".join(rng.choice(vocab, int(rng.integers(60, 100)))))
    return [{"id": f"r{i}", "source_id": f"p{i // 3}", "question": f"q{i // 3}",
             "completion": t, "kind": "cot",
             "score": None if i % 7 == 0 else float(rng.integers(0, 4))}
            for i, t in enumerate(texts)]


def dataset(folder: Path, rows: list[dict], shards: int) -> Path:
    writer = io.ShardWriter(folder, pa.Table.from_pylist(rows).schema)
    size = -(-len(rows) // shards)
    for i in range(0, len(rows), size):
        writer.write(rows[i:i + size])
    writer.close()
    io.write_manifest(folder, {"kind": "generate", "prompt": {"kind": "cot"}})
    return folder


def filter_both(cluster, folder: Path, tmp_path: Path, stages: list) -> tuple[dict, dict]:
    config = tmp_path / "filter.yaml"
    config.write_text(json.dumps({"stages": stages}))
    results = {}
    for executor in ("local", "ray"):
        results[executor] = run_filter(folder, tmp_path / executor, config=config,
                                       executor=executor, ray_address=cluster.address)
    for part in ("kept", "dropped"):
        a, b = (io.shard_paths(tmp_path / ex / part) for ex in ("local", "ray"))
        assert [p.name for p in a] == [p.name for p in b]
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b], f"{part} differ"
    counts = ("stage", "seen", "kept", "dropped", "reasons")
    local, ray = ([{k: s[k] for k in counts} for s in results[ex].stages]
                  for ex in ("local", "ray"))
    assert local == ray
    return results["local"], results["ray"]


@slow
def test_distributed_dedupe_keeps_what_local_dedupe_keeps(cluster, tmp_path):
    rows = planted_rows(400)
    rows += [{**r, "id": f"copy{i}"} for i, r in enumerate(rows[:100])]  # a shard of copies:
    folder = dataset(tmp_path / "in", rows, shards=5)  # no row of it is left for minhash
    local, ray = filter_both(cluster, folder, tmp_path, [
        {"dedupe": {"method": "exact"}},
        {"dedupe": {"method": "minhash", "threshold": 0.8, "keep": "score"}},
        {"quality": {"min_chars": 450}}])  # row by row, over rows read and rows dropped
    exact, near, quality = ray.stages
    assert exact["dropped"] >= 125 and near["dropped"] >= 40  # the planted copies are found
    assert quality["dropped"] > 0 and quality["kept"] > 0
    assert [s["clusters"] for s in ray.stages[:2]] == [s["clusters"] for s in local.stages[:2]]
    dropped = io.read_rows(tmp_path / "ray" / "dropped")
    kept = {r["id"] for r in io.read_rows(tmp_path / "ray" / "kept")}
    kept |= {r["id"] for r in dropped if r["dropped_by"] == "quality"}  # after dedupe
    assert all(r["duplicate_of"] in kept for r in dropped if r["drop_reason"].endswith("(minhash)"))


@slow
def test_the_filter_command_on_a_cluster_writes_what_it_writes_locally(cluster, tmp_path):
    folder = dataset(tmp_path / "in", planted_rows(200), shards=3)
    config = tmp_path / "filter.yaml"
    config.write_text(json.dumps({"stages": [{"dedupe": {"method": "minhash"}}]}))
    run_filter(folder, tmp_path / "local", config=config)
    done = subprocess.run([sys.executable, "-m", "distill.cli", "filter", "--data", str(folder),
                           "--out", str(tmp_path / "ray"), "--config", str(config),
                           "--executor", "ray", "--ray-address", cluster.address],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "filter dedupe: 200 seen" in done.stderr
    for part in ("kept", "dropped"):
        a, b = (io.shard_paths(tmp_path / ex / part) for ex in ("local", "ray"))
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


GSM8K_QUESTION = ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning "
                  "and bakes muffins for her friends every day with four.")


@slow
def test_filter_pipeline_on_ray_writes_the_local_datasets(cluster, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for p in range(12):
        gold = str(p * 3)
        for k in range(4):
            answer = gold if rng.random() < 0.6 else str(p * 3 + 1)
            text = f"We add {p} and {2 * p}: the sum is {answer}. Checking again, step by step, " \
                   f"{p} plus {2 * p} makes {answer}.\n#### {answer}"
            if k == 3 and p % 4 == 0:
                text = "I am not sure how to solve this one"  # no answer
            if p == 5 and k == 1:
                text = f"{GSM8K_QUESTION} So {gold}.\n#### {gold}"  # contaminated
            rows.append({"id": f"p{p}-{k}", "source_id": f"p{p}", "sample_index": k,
                         "question": f"What is {p} plus {2 * p}?", "gold": gold,
                         "template": "gsm8k-cot", "kind": "cot", "task": None,
                         "messages": [{"role": "user", "content": "q"}], "completion": text,
                         "finish_reason": "length" if k == 2 and p % 5 == 0 else "stop",
                         "prompt_tokens": 10, "tokens": len(text) // 4, "model": "teacher",
                         "backend": "hf", "sampling": "{}", "source": "{}"})
    folder = tmp_path / "in"
    writer = io.ShardWriter(folder, row_schema(False))
    for i in range(0, len(rows), 16):
        writer.write(rows[i:i + 16])
    writer.close()
    io.write_manifest(folder, {"kind": "generate", "prompt": {"kind": "cot"}})
    local, ray = filter_both(cluster, folder, tmp_path, [
        {"parse": {}}, {"verify": {"drop_incorrect": False}}, {"decontaminate": {"ngram": 8}},
        {"pass_rate": {"lo": 0.2}}, {"vote": {}}, {"quality": {"min_chars": 20}},
        {"dedupe": {"method": "exact"}}])
    reasons = {s["stage"]: s["reasons"] for s in ray.stages}
    assert reasons["parse"] and reasons["vote"] and reasons["quality"]
    assert reasons["decontaminate"] == {"8-gram overlap with gsm8k test": 1}
    assert ray.kept == local.kept and 0 < ray.kept < len(rows)


@slow
def test_a_worker_side_error_is_a_distill_error_naming_the_column(cluster, tmp_path):
    folder = dataset(tmp_path / "in", [{"id": "a", "completion": "x"}], shards=1)
    config = tmp_path / "filter.yaml"
    config.write_text(json.dumps({"stages": [{"dedupe": {"field": "question"}}]}))
    with pytest.raises(DistillError, match="stage 'dedupe' needs the column 'question'"):
        run_filter(folder, tmp_path / "out", config=config, executor="ray",
                   ray_address=cluster.address)


def test_without_ray_installed_the_ray_executor_says_how_to_get_it(monkeypatch, problems,
                                                                    tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DistillError, match=r"needs Ray: pip install 'distill\[ray\]'"):
        generate("gsm8k-cot", str(problems), str(tmp_path / "out"), backend="hf",
                 executor="ray", progress=False)
