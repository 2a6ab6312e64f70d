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
from processes import process_group
from safetensors.torch import load_file
from test_sft_toy import split, write_dataset

# the `accelerate` script of this Python
ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def train(cmd: list[str], out: Path, data: Path, model: str, batch: int) -> dict:
    args = ["-m", "distill.cli", "train", "sft", "--student", model, "--data", str(data),
            "--out", str(out), "--per_device_train_batch_size", str(batch), "--max_steps", "4",
            "--learning_rate", "1e-3", "--gradient_checkpointing", "false", "--seed", "0",
            "--disable_tqdm", "true", "--logging_steps", "1", "--report_to", "none",
            "--max_length", "128", "--save_strategy", "no", "--use_cpu", "true"]
    # the launcher, torchrun and the ranks are one process group, stopped however this ends
    with process_group([*cmd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false")) as run:
        _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    return json.loads((out / "trainer_state.json").read_text())


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_on_the_global_batch(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "data", split(48, 0)[0])
    # --multi_gpu picks accelerate's torchrun launcher; --use_cpu makes the ranks use gloo.
    # (accelerate's own --cpu flag would start one process only.)
    two = train([*ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
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
    start = load_file(Path(tiny_model) / "model.safetensors")
    assert got.keys() == want.keys()
    # The same float32 training, but not the same float32 sums: each rank sums the gradient over
    # its 4 rows (padded to its own longest) and the all-reduce adds the two, where one process
    # sums all 8, so the gradients differ by rounding, ~1e-7 relative (2^-24 a rounding). AdamW
    # makes each of them an update of about lr per step divided by the gradient's running RMS:
    # the update keeps the gradient's relative error, except where a gradient nearly cancels
    # (or is below eps), where nothing bounds it: one weight of 8,192 came out 1.9e-6 apart
    # after steps of 2.5e-3 (7.7e-4 of a step), so no tolerance per weight follows from float32.
    # Over a whole tensor such weights count little: the update (trained - initial weights,
    # in float64) of each tensor differs by at most 1.1e-5 of its norm here; 1e-3 allows 100
    # times that, and a rank training on other rows than its share changes it by O(1).
    for name in want:
        update = want[name].double() - start[name].double()
        error = (got[name].double() - want[name].double()).norm()
        assert error <= 1e-3 * update.norm(), f"{name}: {error / update.norm():.2e} of the update"
