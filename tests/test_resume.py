"""A generate run killed with SIGKILL mid-run, then rerun, equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from distill import io


def command(source, out, model):
    return [sys.executable, "-m", "distill.cli", "generate", "--prompt", "gsm8k-cot",
            "--data", str(source), "--out", str(out), "--teacher", model, "--backend", "hf",
            "--temperature", "0", "--max-tokens", "24", "--batch-size", "1", "--no-progress"]


def test_sigkill_then_rerun_gives_exactly_the_uninterrupted_rows(tiny_model, tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"What is {i} times {i + 1}?"}) + "\n"
                              for i in range(24)))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(source, killed, tiny_model), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 120
    while len(io.shard_paths(killed)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no shards written in 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    shards = io.shard_paths(killed)
    partial = [row for p in shards for row in pq.read_table(p).to_pylist()]  # none corrupt
    assert 3 <= len(partial) < 24
    assert io.read_manifest(killed)["status"] == "running"

    rerun = subprocess.run(command(source, killed, tiny_model), env=env, capture_output=True,
                           text=True, check=True)
    assert f"reusing {len(partial)} already there" in rerun.stderr
    clean = tmp_path / "clean"
    subprocess.run(command(source, clean, tiny_model), env=env, capture_output=True, check=True)

    resumed, uninterrupted = io.read_rows(killed), io.read_rows(clean)
    assert len(resumed) == len({r["id"] for r in resumed}) == 24  # no duplicates
    key = lambda r: (r["id"], r["completion"], r["tokens"], r["finish_reason"])
    assert sorted(map(key, resumed)) == sorted(map(key, uninterrupted))
    assert io.read_manifest(killed)["status"] == "complete"
    assert not (killed / io.TMP_DIR).exists()


def test_a_run_resumed_over_shards_of_an_older_version_reads_as_one_dataset(tiny_model,
                                                                              tmp_path):
    """Shards written before the ``shots`` column existed, then new ones: generate resumes,
    and filter reads the folder with ``shots`` null in the old rows."""
    from distill.cli import main

    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?",
                                          "answer": str(2 * i)}) + "\n" for i in range(4)))
    out = tmp_path / "gen"
    args = command(source, out, tiny_model)[3:]
    assert main(args + ["--limit", "2"]) == 0
    for old in io.shard_paths(out):  # as 0.2 wrote them
        pq.write_table(pq.read_table(old).drop_columns(["shots"]), old)
    assert main(args) == 0
    assert len(io.read_rows(out)) == 4
    assert main(["filter", "--data", str(out), "--out", str(tmp_path / "f"), "--config",
                 "cot"]) == 0
    rows = io.read_rows(tmp_path / "f" / "kept") + io.read_rows(tmp_path / "f" / "dropped")
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in io.read_rows(out))
    assert sorted(r["shots"] for r in rows if r["shots"] is not None) == [0, 0]


def test_a_teacher_trained_again_is_not_resumed_over(tiny_model, tmp_path, capsys):
    """Rows of a local model's earlier weights are never mixed with its new ones: generate
    refuses, keeping them, and --regenerate starts over. A folder from before the weights
    were recorded resumes."""
    import shutil

    from transformers import AutoModelForCausalLM

    from distill.cli import main

    teacher = shutil.copytree(tiny_model, tmp_path / "teacher")
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?",
                                          "answer": str(2 * i)}) + "\n" for i in range(3)))
    out = tmp_path / "gen"
    args = command(source, out, str(teacher))[3:]
    assert main(args + ["--limit", "1"]) == 0
    manifest = io.read_manifest(out)
    del manifest["row_key"]["model_files"]  # as 0.2 wrote it
    io.write_manifest(out, manifest)
    assert main(args + ["--limit", "2"]) == 0 and len(io.read_rows(out)) == 2

    model = AutoModelForCausalLM.from_pretrained(teacher)  # trained again, saved in place
    model.model.embed_tokens.weight.data.mul_(2)
    model.save_pretrained(teacher)
    before = sorted(r["completion"] for r in io.read_rows(out))
    capsys.readouterr()
    assert main(args) == 2
    assert "the model's files: changed since" in capsys.readouterr().err
    assert sorted(r["completion"] for r in io.read_rows(out)) == before  # nothing lost
    assert main(args + ["--regenerate"]) == 0
    assert "discarding 2 existing rows" in capsys.readouterr().err
    assert len(io.read_rows(out)) == 3
