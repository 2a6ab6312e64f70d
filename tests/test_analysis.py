"""``distill analyze``: the teacher's distribution by temperature, and the compression table."""

import json
import math

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill import io
from distill.cli import main
from distill.sft.student.analysis import (
    compression_markdown,
    compression_table,
    temperature_profile,
)
from distill.sft.student.design import init_student

TEXTS = ["Let me think. 3 * 4 = 12 and 12 + 2 = 14. The answer is 14. #### 14",
         "Maria buys 3 notebooks at $4 each and a pen for $2."]


def test_temperature_profile_matches_a_reference(tiny_model):
    profile = temperature_profile(tiny_model, TEXTS, temperatures=[1.0, 4.0])
    lm = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ref = {1.0: [], 4.0: []}
    with torch.no_grad():
        for text in TEXTS:
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            for row in lm(input_ids=ids).logits[0].double():
                for t, stats in ref.items():
                    p = sorted(torch.softmax(row / t, -1).tolist(), reverse=True)
                    h = -sum(x * math.log(x) for x in p if x > 0)
                    stats.append((h, math.exp(h), p[0], sum(p[:5]), sum(p[:10])))
    assert profile["tokens"] == len(ref[1.0])
    for row in profile["temperatures"]:
        cols = list(zip(*ref[row["temperature"]]))
        for key, values in zip(("entropy", "effective_support", "top1", "top5", "top10"), cols):
            assert row[key] == pytest.approx(sum(values) / len(values), rel=1e-4), key
    cold, hot = profile["temperatures"]
    assert hot["entropy"] > cold["entropy"] and hot["top1"] < cold["top1"]
    assert cold["top1"] <= cold["top5"] <= cold["top10"] <= 1


def test_temperatures_cli(tiny_model, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    assert main(["analyze", "temperatures", "--teacher", tiny_model, "--texts", str(texts),
                 "--temperatures", "1,2", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "temperatures.json").read_text())
    assert [r["temperature"] for r in saved["temperatures"]] == [1.0, 2.0]
    assert "| 2 | " in printed and (tmp_path / "out" / "temperatures.md").read_text() in printed
    assert main(["analyze", "temperatures", "--teacher", tiny_model, "--texts", str(texts),
                 "--temperatures", "0,1"]) == 2


def write_run(folder, params, correct, tokens_per_second, backend="hf"):
    """An eval output folder (metrics.json + per-item rows) with the given outcomes."""
    items = [{"id": f"t{i}", "answer": str(i) if c else None, "correct": c}
             for i, c in enumerate(correct)]
    io.ShardWriter(folder, pa.Table.from_pylist(items).schema).write(items)
    accuracy = sum(correct) / len(correct)
    metrics = {"model": folder.name, "backend": backend, "params": params,
               "items": len(items), "accuracy": accuracy, "accuracy_ci": [accuracy, accuracy],
               "mean_tokens": 5.0, "speed": {"tokens_per_second": tokens_per_second}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_compression_table_from_eval_runs(tmp_path):
    teacher = write_run(tmp_path / "teacher", 1_000_000, [True, True, True, False], 50.0)
    student = write_run(tmp_path / "student", 250_000, [True, False, True, False], 150.0)
    table = compression_table([student], teacher=teacher, bootstrap=200)
    t, s = table["runs"]
    assert t["teacher"] and t["compression"] == 1.0 and t["speedup"] == 1.0
    assert s["compression"] == 4.0 and s["speedup"] == 3.0 and s["accuracy"] == 0.5
    assert s["retention"] == pytest.approx(2 / 3) and s["shared_items"] == 4
    assert s["retention_ci"][0] <= s["retention"] <= s["retention_ci"][1]
    md = compression_markdown(table)
    assert "| student | 0.25M | 4.00x | 0.500 | 0.667 [" in md and "| 3.00x |" in md
    assert not table["notes"]
    other = write_run(tmp_path / "vllm-student", 250_000, [True] * 4, 400.0, backend="vllm")
    assert "different generation backends" in compression_markdown(
        compression_table([teacher, other], bootstrap=50))


def test_compression_cli_on_real_eval_runs(tiny_model, tmp_path, capsys):
    """design/init a half-depth student from the tiny teacher, evaluate both, tabulate."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model)
    config.num_hidden_layers = 1
    config.save_pretrained(tmp_path / "cfg")
    init_student(tiny_model, tmp_path / "cfg", tmp_path / "student")
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?",
                                        "answer": str(2 * i)}) + "\n" for i in range(3)))
    for name, model in (("teacher", tiny_model), ("student", str(tmp_path / "student"))):
        assert main(["eval", "--model", model, "--data", str(task), "--out",
                     str(tmp_path / "eval" / name), "--backend", "hf", "--max-tokens", "4",
                     "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["analyze", "compression", str(tmp_path / "eval" / "teacher"),
                 str(tmp_path / "eval" / "student"), "--out", str(tmp_path / "report")]) == 0
    saved = json.loads((tmp_path / "report" / "compression.json").read_text())
    t, s = saved["runs"]
    assert t["teacher"] and s["params"] < t["params"]
    assert s["compression"] == pytest.approx(t["params"] / s["params"])
    assert s["speedup"] > 0 and "| student |" in capsys.readouterr().out


def test_temperatures_teacher_was_model(capsys):
    from distill.cli import build_parser

    args = build_parser().parse_args(["analyze", "temperatures", "--teacher", "t", "--texts", "x"])
    assert args.teacher == "t" and "deprecated" not in capsys.readouterr().err
    args = build_parser().parse_args(["analyze", "temperatures", "--model", "m", "--texts", "x"])
    assert args.teacher == "m"
    assert ("--model is deprecated and will be removed in 0.3; use --teacher"
            in capsys.readouterr().err)
