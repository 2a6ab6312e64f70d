"""The embedded SmolLM2-135M-Instruct on GSM8K-style items gives a number (slow: real model)."""

import json

import pytest
from conftest import REPO

from distill import io
from distill.cli import main


@pytest.mark.slow
def test_default_model_on_gsm8k_style_items(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(REPO / "examples/problems.jsonl"), "--limit", "4",
                 "--prompt", "gsm8k-cot-8shot", "--backend", "hf", "--max-tokens", "96",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "SmolLM2-135M-Instruct" and m["items"] == 4
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy_ci"][0] <= m["accuracy_ci"][1]
    assert 130e6 < m["params"] < 140e6
    # a real instruct model, shown 8 worked examples, states answers in the asked format
    assert m["format_compliance"] >= 0.5 and m["answered"] >= 0.75
    rows = io.read_rows(out)
    assert all(len(r["completion"].split()) > 5 for r in rows)
    assert "accuracy" in capsys.readouterr().out
