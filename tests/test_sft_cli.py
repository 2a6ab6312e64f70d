"""``distill train sft`` end to end: flags and recipes, outputs and card, LoRA, resume after
SIGKILL, accelerate configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft_toy import split, write_dataset

from distill import io
from distill.cli import build_parser, main
from distill.errors import DistillError
from distill.sft.config import build_config, load_train_config

REPO = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
             "--gradient_checkpointing", "false", "--disable_tqdm", "true", "--seed", "0",
             "--logging_steps", "5", "--report_to", "none", "--max_length", "128"]


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> Path:
    """A ``distill filter`` output folder: kept/ (with lineage) holding toy CoT rows."""
    root = tmp_path_factory.mktemp("filtered")
    train, _ = split(48, 0)
    generate = {"kind": "generate", "created": io.now(), "model": "toy-teacher",
                "prompt": {"name": "toy-addition", "sha256": "ab" * 32, "kind": "cot"},
                "source": {"path": "problems.jsonl"}, "sampling": {"temperature": 0.0},
                "rows_planned": 50}
    write_dataset(root / "kept", train, {
        "kind": "filter", "created": io.now(), "input": "runs/toy", "input_manifest": generate,
        "stages": [{"stage": "parse", "dropped": 2}], "rows": len(train)})
    return root


def run_cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "distill.cli", "train", "sft", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                          check=False)


def test_flags_pass_through_to_the_config(tmp_path):
    args = build_parser().parse_args(
        ["train", "sft", "--data", "d", "--out", "o", "--answer-weight", "2", "--learning_rate",
         "1e-3", "--max_steps", "7", "--lora", "--packing"])
    assert args.argv == ["--data", "d", "--out", "o", "--answer-weight", "2", "--learning_rate",
                         "1e-3", "--max_steps", "7", "--lora", "--packing"]
    config = build_config({"learning_rate": "2e-5", "warmup_steps": 3}, args.argv,
                          output_dir="o")
    assert (config.learning_rate, config.max_steps, config.warmup_steps) == (1e-3, 7, 3)
    assert config.answer_weight == 2.0 and config.use_lora and config.packing
    assert config.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    with pytest.raises(DistillError, match="unknown training arguments: --no_such_field 1"):
        build_config({}, ["--no_such_field", "1"], output_dir="o")


def test_recipes_load(tmp_path):
    for path in sorted((REPO / "recipes").glob("sft-*.yaml")):
        build_config(load_train_config(path), [], output_dir=str(tmp_path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nlerning_rate: 2\n")
    with pytest.raises(DistillError, match="unknown keys lerning_rate"):
        load_train_config(bad)


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO / "recipes" / "accelerate").glob("*.yaml")):
        kinds[path.stem] = load_config_from_file(str(path)).distributed_type.value
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED",
                     "deepspeed-zero3": "DEEPSPEED"}


def test_bad_input_fails_with_one_line(tmp_path, capsys):
    assert main(["train", "sft", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset here" in capsys.readouterr().err


def test_cli_trains_and_writes_student_and_card(tiny_model, filtered, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "student"
    done = run_cli("--student", tiny_model, "--data", filtered, "--out", out, "--answer-weight",
                   "2", "--max_steps", "10", "--save_steps", "5", *TINY_ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 10 steps" in done.stdout
    assert "data: 48 rows -> 48 training sequences" in done.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    card = (out / "README.md").read_text()
    assert "**filter** of `runs/toy`, stages parse (-2), 48 rows" in card
    assert "**generate** from `problems.jsonl`, model `toy-teacher`, prompt `toy-addition`" in card
    assert "| answer_weight | `2.0` |" in card and "| max_steps | `10` |" in card
    assert "| train_loss |" in card and "![loss curve](loss.png)" in card
    assert (out / "loss.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 10
    # a rerun with other settings does not touch the checkpoints
    again = run_cli("--student", tiny_model, "--data", filtered, "--out", out, "--answer-weight",
                    "3", "--max_steps", "10", *TINY_ARGS)
    assert again.returncode == 2 and "answer_weight changed" in again.stderr


def test_lora_saves_adapter_and_merged_student(tiny_model, filtered, tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.sft.train import train_sft

    out = tmp_path / "lora"
    result = train_sft(tiny_model, filtered, out, use_lora=True, lora_r=4, max_steps=4,
                       save_strategy="no", learning_rate=1e-2, gradient_checkpointing=True,
                       per_device_train_batch_size=8, report_to="none", disable_tqdm=True)
    assert result.metrics["global_step"] == 4
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])
    assert "LoRA: the adapter is in `adapter/`" in (out / "README.md").read_text()


def test_resume_after_sigkill_reaches_the_same_step_and_weights(tiny_model, filtered, tmp_path):
    from distill.sft.train import train_sft

    steps = ["--max_steps", "160", "--save_steps", "40"]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "distill.cli", "train", "sft", "--student", tiny_model,
           "--data", str(filtered), "--out", str(out), *steps, *TINY_ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    deadline = time.time() + 300
    while not (out / "checkpoint-40" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the end"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()  # it died mid-run
    resumed = run_cli("--student", tiny_model, "--data", filtered, "--out", out, *steps, *TINY_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "trained 160 steps" in resumed.stdout
    # the same run, never killed, in this process
    config = build_config({}, [*steps, *TINY_ARGS], output_dir=str(tmp_path / "ref"))
    train_sft(tiny_model, filtered, tmp_path / "ref", config)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 160
    got, want = load_file(out / "model.safetensors"), load_file(tmp_path / "ref" /
                                                                 "model.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_step_by_step_with_eval_data_and_packing(tiny_model, filtered, tmp_path):
    from distill.sft.train import train_sft

    out = tmp_path / "sbs"
    result = train_sft(tiny_model, filtered, out, eval_data=filtered / "kept",
                       objective="step_by_step", step_by_step_alpha=0.3, packing=True,
                       max_length=256, max_steps=3, save_strategy="no", eval_strategy="steps",
                       eval_steps=3, per_device_train_batch_size=4, report_to="none",
                       disable_tqdm=True, gradient_checkpointing=False)
    assert result.data["rows"] == 48 and result.data["examples"] == 96
    assert "eval_loss" in result.metrics and "eval_answer_nll" in result.metrics
    card = (out / "README.md").read_text()
    assert "put `[label] ` before the question for the answer alone" in card
    assert "loss normalization: `spans`" in card and "reasoning 0.3, answer 0.7" in card


def test_default_student_smoke(filtered, tmp_path):
    """The embedded SmolLM2-135M-Instruct, two steps, its own chat template and tokenizer."""
    from transformers import AutoModelForCausalLM

    from distill.sft.train import train_sft

    out = tmp_path / "smol"
    result = train_sft(None, filtered, out, max_steps=2, per_device_train_batch_size=2,
                       answer_weight=2.0, learning_rate=1e-5, save_strategy="no",
                       report_to="none", disable_tqdm=True)
    assert result.metrics["global_step"] == 2 and result.data["examples"] == 48
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path, capsys):
    from distill.sft.config import RESUME_KEY
    from distill.sft.train import RUN_FILE, _resume_point

    run = {"model": "m", "data": "d", "data_sha256": "x", "settings": dict.fromkeys(RESUME_KEY)}
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 5}')
    (tmp_path / "checkpoint-10").mkdir()  # weights written, trainer_state.json not yet
    (tmp_path / "checkpoint-10" / "model.safetensors").write_text("partial")
    (tmp_path / "checkpoint-15").mkdir()
    (tmp_path / "checkpoint-15" / "trainer_state.json").write_text('{"global_st')  # cut short
    (tmp_path / RUN_FILE).write_text(json.dumps(run))
    assert _resume_point(tmp_path, run, restart=False) == str(tmp_path / "checkpoint-5")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-5"]
    assert "removing incomplete checkpoint-10" in capsys.readouterr().err
    assert _resume_point(tmp_path, run, restart=True) is None
    assert not list(tmp_path.glob("checkpoint-*"))


def test_train_into_a_users_folder_stops_and_keeps_its_files(tiny_model, filtered, tmp_path,
                                                             capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("# my model\n")
    (out / "config.json").write_text('{"mine": true}\n')
    code = main(["train", "sft", "--student", tiny_model, "--data", str(filtered), "--out",
                 str(out), "--max_steps", "1", *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out}: holds files distill train sft did not write" in err
    assert "--overwrite" in err and sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json"]
    assert (out / "config.json").read_text() == '{"mine": true}\n'


def test_a_finished_run_stays_finished_unless_max_steps_grows(tiny_model, filtered, tmp_path,
                                                              capsys):
    from distill.sft.train import RUN_FILE, train_sft

    out = tmp_path / "student"
    kw = {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
          "gradient_checkpointing": False, "disable_tqdm": True, "seed": 0, "report_to": "none",
          "max_length": 128, "lr_scheduler_type": "constant", "logging_steps": 1}
    train_sft(tiny_model, filtered, out, **kw)
    weights = load_file(out / "model.safetensors")
    card = (out / "README.md").read_text()
    capsys.readouterr()

    again = train_sft(tiny_model, filtered, out, **kw)
    assert "already trained to its last step (2); nothing to do" in capsys.readouterr().err
    assert again.metrics["global_step"] == 2 and (out / "README.md").read_text() == card
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert all(torch.equal(t, load_file(out / "model.safetensors")[k]) for k, t in weights.items())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]

    # killed while saving the student and writing its card: finished, not trained on
    (out / "README.md").unlink()
    (out / "model.safetensors").unlink()
    run = json.loads((out / RUN_FILE).read_text())
    (out / RUN_FILE).write_text(json.dumps({k: v for k, v in run.items() if k != "finished"}))
    done = train_sft(tiny_model, filtered, out, **kw)
    assert "finishing the student and its card, no training" in capsys.readouterr().err
    assert done.metrics["global_step"] == 2 and (out / "README.md").exists()
    assert all(torch.equal(t, load_file(out / "model.safetensors")[k]) for k, t in weights.items())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]

    more = train_sft(tiny_model, filtered, out, **{**kw, "max_steps": 3})
    assert "max_steps 2 -> 3: training on from checkpoint-2" in capsys.readouterr().err
    assert more.metrics["global_step"] == 3
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
