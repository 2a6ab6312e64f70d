"""``distill train sft`` runs unchanged under ``accelerate launch``: two processes on CPU (DDP
over gloo, started by accelerate's torchrun launcher) train the same student as one process
given the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft_toy import split, write_dataset

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


def train(cmd: list[str], out: Path, data: Path, model: str, batch: int) -> dict:
    args = ["-m", "distill.cli", "train", "sft", "--student", model, "--data", str(data),
            "--out", str(out), "--per_device_train_batch_size", str(batch), "--max_steps", "4",
            "--learning_rate", "1e-3", "--gradient_checkpointing", "false", "--seed", "0",
            "--disable_tqdm", "true", "--logging_steps", "1", "--report_to", "none",
            "--max_length", "128", "--save_strategy", "no", "--use_cpu", "true"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TOKENIZERS_PARALLELISM="false"), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "trainer_state.json").read_text())


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_on_the_global_batch(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "data", split(48, 0)[0])
    # --multi_gpu picks accelerate's torchrun launcher; --use_cpu makes the ranks use gloo.
    # (accelerate's own --cpu flag would start one process only.)
    two = train([ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                 "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
                tmp_path / "two", data, tiny_model, batch=4)
    one = train([sys.executable], tmp_path / "one", data, tiny_model, batch=8)
    # 2 ranks x 4 rows per step: a step takes 8 of the 48 rows, as the single process does
    assert [h["epoch"] for h in two["log_history"][:4]] == pytest.approx([1 / 6, 2 / 6, 3 / 6,
                                                                           4 / 6])
    assert [h["num_tokens"] for h in two["log_history"][:4]] == \
        [h["num_tokens"] for h in one["log_history"][:4]]
    got, want = load_file(tmp_path / "two" / "model.safetensors"), \
        load_file(tmp_path / "one" / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
