"""Own your folder, one writer per folder: no command deletes or rewrites what it did not
write, an input is never an output, two writers never share a folder, ``distill check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distilled import build
from processes import process_group

from distill import io
from distill.cli import main
from distill.errors import DistillError
from distill.folders import LOCK, claim, lock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(generate output, filter output), made by distill with a scripted teacher."""
    return build(tmp_path_factory.mktemp("distilled"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def user_folder(folder: Path) -> dict[str, bytes]:
    """A folder of a user's own files, one of them in data/ (a dataset's place)."""
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "results.csv").write_text("run,accuracy\na,0.5\n")
    (folder / "README.md").write_text("# my notes\n")
    return snapshot(folder)


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def aside_of(folder: Path) -> Path:
    (moved,) = folder.parent.glob(f"{folder.name}.replaced-*")
    return moved


def test_publish_into_a_users_folder_stops_and_overwrite_moves_it_aside(distilled, tmp_path,
                                                                         capsys):
    _, filtered = distilled
    out = tmp_path / "pub"
    before = user_folder(out)
    code, err = cli(capsys, "publish", "--data", filtered, "--out", out)
    assert code == 2 and snapshot(out) == before
    assert f"--out {out}: holds files distill publish did not write" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1

    code, _ = cli(capsys, "publish", "--data", filtered, "--out", out, "--overwrite")
    assert code == 0 and snapshot(aside_of(out)) == before  # moved aside, not lost
    assert io.read_manifest(out)["kind"] == "publish" and not (out / "data" / "results.csv").exists()


def test_publish_over_another_dataset_keeps_its_shards(distilled, tmp_path, capsys):
    gen, filtered = distilled
    code, err = cli(capsys, "publish", "--data", filtered, "--out", gen)
    assert code == 2 and "did not write" in err and io.read_manifest(gen)["kind"] == "generate"
    assert len(io.read_rows(gen)) == 24


def test_republishing_keeps_a_users_file_in_its_own_folder(distilled, tmp_path, capsys):
    _, filtered = distilled
    out = tmp_path / "pub"
    assert cli(capsys, "publish", "--data", filtered, "--out", out)[0] == 0
    (out / "data" / "results.csv").write_text("mine\n")
    assert cli(capsys, "publish", "--data", filtered, "--out", out, "--test-size", "0.25")[0] == 0
    assert (out / "data" / "results.csv").read_text() == "mine\n"
    assert any(p.name.startswith("test-") for p in (out / "data").iterdir())


def test_an_input_is_never_an_output(distilled, tmp_path, capsys):
    gen, filtered = distilled
    before = snapshot(filtered)
    for args in (["filter", "--data", filtered / "kept", "--out", filtered],
                 ["filter", "--data", gen, "--out", gen],
                 ["filter", "--data", gen, "--out", gen / "sub"],
                 ["publish", "--data", filtered, "--out", filtered / "pub"]):
        code, err = cli(capsys, *args)
        assert code == 2 and "would overwrite the input" in err, args
    assert snapshot(filtered) == before and not (gen / "sub").exists()


def test_filter_keeps_a_users_file_and_refuses_a_foreign_folder(distilled, tmp_path, capsys):
    gen, _ = distilled
    out = tmp_path / "f"
    assert cli(capsys, "filter", "--data", gen, "--out", out)[0] == 0
    (out / "kept" / "data" / "mine.txt").write_text("mine\n")
    assert cli(capsys, "filter", "--data", gen, "--out", out)[0] == 0  # its own folder: rerun
    assert (out / "kept" / "data" / "mine.txt").read_text() == "mine\n"

    foreign = tmp_path / "foreign"
    (foreign / "kept" / "data").mkdir(parents=True)
    (foreign / "kept" / "data" / "mine.txt").write_text("mine\n")
    code, err = cli(capsys, "filter", "--data", gen, "--out", foreign)
    assert code == 2 and "--overwrite" in err
    assert (foreign / "kept" / "data" / "mine.txt").read_text() == "mine\n"


def test_eval_into_a_dataset_folder_stops_before_touching_it(distilled, tmp_path, capsys):
    gen, _ = distilled
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    before = snapshot(gen)
    code, err = cli(capsys, "eval", "--data", items, "--out", gen)
    assert code == 2 and "holds files distill eval did not write" in err
    assert snapshot(gen) == before


def test_generate_refuses_a_foreign_manifest_a_broken_one_and_a_file(tmp_path, problems, capsys):
    args = ["generate", "--prompt", "gsm8k-cot", "--data", problems, "--backend", "hf"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"kind": "my-experiment"}')
    code, err = cli(capsys, *args, "--out", foreign)
    assert code == 2 and "did not write (manifest.json)" in err and "--overwrite" in err
    assert (foreign / "manifest.json").read_text() == '{"kind": "my-experiment"}'

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    code, err = cli(capsys, *args, "--out", broken)
    assert code == 2 and "manifest.json: not valid JSON" in err and "Traceback" not in err
    assert (broken / "manifest.json").read_text() == "{not json"

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, err = cli(capsys, *args, "--out", a_file)
    assert code == 2 and "is a file, not a folder" in err and a_file.read_text() == "x"


def test_a_failed_start_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new"
    code, err = cli(capsys, "generate", "--prompt", "gsm8k-cot", "--data", tmp_path / "missing",
                    "--out", out)
    assert code == 2 and "missing" in err and not out.exists()


def test_regenerate_discards_only_the_shards_generate_wrote(tiny_model, problems, tmp_path,
                                                           capsys):
    out = tmp_path / "gen"
    args = ["generate", "--prompt", "gsm8k-cot", "--data", problems, "--out", out, "--teacher",
            tiny_model, "--backend", "hf", "--max-tokens", "4", "--no-progress", "--limit", "2"]
    assert cli(capsys, *args, "--temperature", "0")[0] == 0
    (out / "data" / "notes.txt").write_text("mine\n")
    assert cli(capsys, *args, "--temperature", "0.5", "--seed", "1", "--regenerate")[0] == 0
    assert (out / "data" / "notes.txt").read_text() == "mine\n"
    assert len(io.read_rows(out)) == 2 and io.read_manifest(out)["row_key"]["temperature"] == 0.5


def test_two_generates_into_one_folder_one_is_refused_at_once(tiny_model, tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps({"question": f"What is {i} times {i + 1}?"}) + "\n"
                              for i in range(24)))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "distill.cli", "generate", "--prompt", "gsm8k-cot", "--data",
            str(source), "--out", str(out), "--teacher", tiny_model, "--backend", "hf",
            "--temperature", "0", "--max-tokens", "24", "--batch-size", "1", "--no-progress"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with process_group(args, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE) as first:
        deadline = time.time() + 120
        while not io.shard_paths(out):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline, "no shard written in 120 s"
            time.sleep(0.05)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert first.poll() is None  # refused while the first still runs: at once
        assert second.returncode == 2, second.stderr
        assert f"another writer is at work in it (distill generate, pid {first.pid}" in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    ids = [r["id"] for r in io.read_rows(out)]
    assert len(ids) == len(set(ids)) == 24 == io.read_manifest(out)["rows"]
    assert not (out / LOCK).exists() and not (out / io.TMP_DIR).exists()


def test_two_shard_writers_never_share_a_name_or_scratch_folder(tmp_path):
    schema = pa.schema([("id", pa.string())])
    a, b = io.ShardWriter(tmp_path, schema), io.ShardWriter(tmp_path, schema)
    assert a.tmp != b.tmp
    paths = [a.write([{"id": "a0"}]), b.write([{"id": "b0"}]), a.write([{"id": "a1"}])]
    a.close()
    assert b.tmp.is_dir()  # the other writer's scratch stays while it writes
    paths.append(b.write([{"id": "b1"}]))
    b.close()
    assert len(set(paths)) == 4 and sorted(r["id"] for r in io.read_rows(tmp_path)) == [
        "a0", "a1", "b0", "b1"]
    assert not (tmp_path / io.TMP_DIR).exists()


def test_a_dead_writers_scratch_is_cleaned_a_live_ones_kept(tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / io.TMP_DIR / f"{host}-{dead}-0000aaaa"
    live = tmp_path / io.TMP_DIR / f"{host}-{os.getppid()}-0000bbbb"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "part.parquet").write_text("half")
    io.ShardWriter(tmp_path, pa.schema([("id", pa.string())])).close()
    assert not stale.exists() and live.exists()


def test_the_lock_names_its_holder(tmp_path):
    with lock(tmp_path, "generate"):
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "generate"
        second = claim(tmp_path, "publish", "publish")
        with pytest.raises(DistillError, match=f"pid {os.getpid()} on host {holder['host']}"):
            second.__enter__()
    assert not (tmp_path / LOCK).exists()
    with claim(tmp_path, "publish", "publish"):  # free again
        pass


def test_a_writer_killed_with_sigkill_leaves_the_folder_free(tmp_path):
    """kill -9 leaves the lock file behind, but the kernel drops the flock with the process:
    the next writer takes the folder at once."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom distill.folders import lock\n"
        f"with lock({str(tmp_path)!r}, 'generate'):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DistillError, match=f"pid {holder.pid}"), lock(tmp_path, "filter"):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK).exists()  # left behind by the killed writer
    with lock(tmp_path, "filter"):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_check_finds_and_repairs_repeated_ids(tmp_path, capsys):
    writer = io.ShardWriter(tmp_path, pa.schema([("id", pa.string()), ("n", pa.int64())]))
    writer.write([{"id": "a", "n": 0}, {"id": "b", "n": 1}])
    writer.write([{"id": "b", "n": 2}, {"id": "c", "n": 3}])
    writer.write([{"id": "a", "n": 4}])
    writer.close()
    io.write_manifest(tmp_path, {"kind": "generate", "rows": 3})
    code = main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "2 rows repeat the id of another row" in out and "--repair" in out
    assert len(io.read_rows(tmp_path)) == 5  # checking changes nothing

    assert main(["check", str(tmp_path), "--repair"]) == 0
    assert [(r["id"], r["n"]) for r in io.read_rows(tmp_path)] == [("a", 0), ("b", 1), ("c", 3)]
    assert len(io.shard_paths(tmp_path)) == 2  # the shard left empty is gone
    assert all(pq.read_table(p).num_rows for p in io.shard_paths(tmp_path))
    assert io.read_manifest(tmp_path)["rows"] == 3
    assert main(["check", str(tmp_path)]) == 0 and "no repeated ids" in capsys.readouterr().out


def test_generate_on_a_folder_with_repeated_ids_says_to_repair(problems, tmp_path, capsys):
    out = tmp_path / "gen"
    writer = io.ShardWriter(out, pa.schema([("id", pa.string())]))
    writer.write([{"id": "x"}])
    writer.write([{"id": "x"}])
    writer.close()
    io.write_manifest(out, {"kind": "generate", "row_key": {}})
    code, err = cli(capsys, "generate", "--prompt", "gsm8k-cot", "--data", problems, "--out",
                    out, "--backend", "hf")
    assert code == 2 and f"distill check {out} --repair" in err


def test_a_run_stopped_after_writing_still_owns_its_folder(tmp_path):
    out = tmp_path / "eval"
    with pytest.raises(KeyboardInterrupt), claim(out, "eval", "eval"):
        (out / "items.jsonl").write_text("{}\n")
        raise KeyboardInterrupt
    assert io.read_manifest(out)["kind"] == "eval"
    with claim(out, "eval", "eval"):  # the rerun resumes in it
        pass
    with pytest.raises(DistillError), claim(tmp_path / "new", "eval", "eval"):
        raise DistillError("bad input")
    assert not (tmp_path / "new").exists()


def test_a_train_run_from_before_markers_had_a_kind_is_still_its_own(tmp_path):
    out = tmp_path / "student"
    out.mkdir()
    (out / "distill_sft.json").write_text(json.dumps({"model": "m", "settings": {}}))
    (out / "checkpoint-2").mkdir()
    with claim(out, "train sft", "train", marker="distill_sft.json"):
        pass
    assert (out / "checkpoint-2").is_dir()
    with pytest.raises(DistillError, match="--overwrite"), claim(out, "eval", "eval"):
        pass


def test_a_second_run_of_a_recipe_in_one_folder_stops_at_once(tmp_path):
    from distill.recipe import run_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("name: x\ngenerate: {task: gsm8k, limit: 1}\n")
    out = tmp_path / "run"
    out.mkdir()
    with lock(out, "run"), pytest.raises(DistillError, match=f"distill run, pid {os.getpid()}"):
        run_recipe(path, out)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing ran


def test_report_and_model_writers_keep_a_users_files(tiny_model, tmp_path, capsys):
    """eval compare, analyze, student design and init own their --out as the stages do: a
    folder of a user's files is refused and left as it was, --overwrite moves it aside, their
    own folder is written again, and an input is never the output."""
    from test_analysis import write_run

    runs = [write_run(tmp_path / name, 1000, [True, False], 10.0) for name in ("a", "b")]
    commands = {
        "eval compare": ["eval", "compare", *runs, "--bootstrap", "50"],
        "analyze compression": ["analyze", "compression", *runs],
        "student design": ["student", "design", "--teacher", tiny_model, "--ratio", "1"],
        "student init": ["student", "init", "--teacher", tiny_model, "--config", tiny_model],
    }
    for command, args in commands.items():
        out = tmp_path / command.replace(" ", "-")
        before = user_folder(out)
        code, err = cli(capsys, *args, "--out", out)
        assert code == 2 and snapshot(out) == before, command
        assert f"holds files distill {command} did not write" in err
        assert cli(capsys, *args, "--out", out, "--overwrite")[0] == 0
        assert snapshot(aside_of(out)) == before  # moved aside, not lost
        assert cli(capsys, *args, "--out", out)[0] == 0, command  # its own folder: again
    report = tmp_path / "eval-compare" / "compare.json"  # as written before it had a kind
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items()
                                  if k != "kind"}))
    assert cli(capsys, *commands["eval compare"], "--out", report.parent)[0] == 0
    first = tmp_path / "flag-first"  # --overwrite before the verb counts too
    before = user_folder(first)
    assert cli(capsys, "eval", "--overwrite", *commands["eval compare"][1:], "--out", first)[0] == 0
    assert snapshot(aside_of(first)) == before
    with lock(report.parent, "eval compare"):  # a second compare into it meanwhile
        code, err = cli(capsys, *commands["eval compare"], "--out", report.parent)
    assert code == 2 and "another writer is at work in it" in err
    model = snapshot(Path(tiny_model))
    for args in (commands["student init"] + ["--out", tiny_model],
                 commands["eval compare"] + ["--out", runs[0] / "report"]):
        code, err = cli(capsys, *args)
        assert code == 2 and "would overwrite the input" in err, args
    assert snapshot(Path(tiny_model)) == model and not (runs[0] / "report").exists()


def test_show_html_never_rewrites_a_users_file(distilled, tmp_path, capsys):
    _, filtered = distilled
    page = tmp_path / "page.html"
    page.write_text("<html>my page</html>\n")
    code, err = cli(capsys, "show", "--data", filtered, "--html", page)
    assert code == 2 and f"--html {page}: a file distill show --html did not write" in err
    assert page.read_text() == "<html>my page</html>\n"
    own = tmp_path / "own.html"
    assert cli(capsys, "show", "--data", filtered, "--html", own)[0] == 0
    assert cli(capsys, "show", "--data", filtered, "--html", own, "--max-rows", "2")[0] == 0
    assert "2 of 24 rows embedded" in own.read_text()
    code, err = cli(capsys, "show", "--data", filtered, "--html", filtered / "page.html")
    assert code == 2 and "would overwrite the input" in err
    assert not (filtered / "page.html").exists()
