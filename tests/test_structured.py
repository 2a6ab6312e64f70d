"""Structured outputs: a prompt file's ``output`` (JSON schema, regex, choice) holds the hf
backend's decoding to it (xgrammar), rows get ``output``/``output_valid``, the filter drops
invalid ones and the judge's score is read from its JSON (the vllm backends: in
test_vllm_backend.py and test_openai_backend.py)."""

from __future__ import annotations

import json
import re
import sys

import datasets
import pytest
import yaml
from jsonschema import validate

from distill import io
from distill.cli import main
from distill.datagen import generate, load_prompt
from distill.datagen.backends import Request, Sampling
from distill.datagen.backends.hf import HFBackend
from distill.datagen.structured import parse
from distill.errors import DistillError
from distill.filters.output import ValidOutput
from distill.filters.score import Score

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["answer", "unit"],
          "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 99},
                         "unit": {"enum": ["apples", "pears"]}}}
OUTPUTS = {"json_schema": SCHEMA, "regex": r"[0-9]{1,3} (apples|pears)",
           "choice": ["yes", "no", "maybe"]}


def prompt_file(tmp_path, output, name="answer-json") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "kind": "instruction",
                                    "user": "{{ question }} Answer briefly.",
                                    "output": output, "sampling": {"max_tokens": 48}}))
    return str(path)


@pytest.fixture(scope="module")
def hf(tiny_model):
    return HFBackend(tiny_model, batch_size=4)


def rows_of(out):
    return datasets.load_dataset("parquet", data_files=[str(p) for p in io.shard_paths(out)],
                                 split="train")


def follows(kind, value, text) -> bool:
    if kind == "json_schema":
        validate(json.loads(text), value)
        return True
    return re.fullmatch(value, text) is not None if kind == "regex" else text in value


@pytest.mark.parametrize("kind", list(OUTPUTS))
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_hf_rows_follow_the_declared_output(hf, problems, tmp_path, kind, temperature):
    out = tmp_path / "gen"
    generate(prompt_file(tmp_path, {kind: OUTPUTS[kind]}), str(problems), str(out), model="tiny",
             backend=hf, n=2, temperature=temperature, progress=False)
    ds = rows_of(out)
    assert len(ds) == 12 and all(ds["output_valid"])
    for row in ds:
        assert follows(kind, OUTPUTS[kind], row["completion"])
        assert row["output"] == (json.dumps(json.loads(row["completion"]))
                                 if kind == "json_schema" else row["completion"])


def test_a_prompt_without_output_keeps_its_columns(hf, problems, tmp_path):
    out = tmp_path / "gen"
    generate("gsm8k-cot", str(problems), str(out), model="tiny", backend=hf, temperature=0,
             max_tokens=4, progress=False)
    assert not {"output", "output_valid"} & set(rows_of(out).column_names)


def test_hf_without_xgrammar_refuses_in_one_line(hf, monkeypatch):
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # as if not installed
    with pytest.raises(DistillError, match="need xgrammar: pip install xgrammar"):
        hf.generate([Request([{"role": "user", "content": "hi"}], 1, 0)],
                    Sampling(output={"choice": ["a", "b"]}))


@pytest.mark.parametrize("output, message", [
    ({"json": {}}, "output: must be a mapping with one key of json_schema, regex, choice"),
    ({"regex": "a", "choice": ["a"]}, "output: must be a mapping with one key"),
    ({"json_schema": {"type": "objekt"}}, "output.json_schema: not a valid JSON schema"),
    ({"json_schema": "{}"}, "output.json_schema: must be a mapping"),
    ({"regex": "([0-9]"}, "output.regex: not a valid regex"),
    ({"choice": []}, "output.choice: must be a non-empty list"),
    ({"choice": ["a", 1]}, "output.choice: must be a non-empty list of non-empty strings"),
])
def test_a_bad_output_names_the_file_and_key(tmp_path, output, message):
    path = prompt_file(tmp_path, output)
    with pytest.raises(DistillError, match=re.escape(f"{path}: {message}")):
        load_prompt(path)


@pytest.mark.parametrize("spec, text, expected", [
    ({"json_schema": SCHEMA}, '{"answer": 5, "unit": "pears"}',
     ('{"answer": 5, "unit": "pears"}', True)),
    ({"json_schema": SCHEMA}, '{"answer": 500, "unit": "pears"}',
     ('{"answer": 500, "unit": "pears"}', False)),
    ({"json_schema": SCHEMA}, '{"answer": 5, "unit": "pe', (None, False)),
    ({"regex": "[0-9]+"}, "42", ("42", True)),
    ({"regex": "[0-9]+"}, "42 and more", ("42 and more", False)),
    ({"choice": ["yes", "no"]}, "no", ("no", True)),
    ({"choice": ["yes", "no"]}, "nope", ("nope", False)),
])
def test_parse_reads_a_completion_against_its_output(spec, text, expected):
    assert parse(spec, text) == expected


def test_valid_output_stage_drops_invalid_rows_with_a_reason():
    rows = [{"id": "a", "output_valid": True}, {"id": "b", "output_valid": False}]
    kept, dropped = ValidOutput().apply(rows)
    assert [r["id"] for r in kept] == ["a"]
    assert [(r["id"], r["drop_reason"]) for r in dropped] == \
        [("b", "output does not match the prompt's schema")]


def test_filter_config_runs_valid_output(hf, problems, tmp_path):
    """A run cut at max_tokens leaves invalid JSON; `distill filter` drops those rows."""
    gen, out = tmp_path / "gen", tmp_path / "filtered"
    generate(prompt_file(tmp_path, {"json_schema": SCHEMA}), str(problems), str(gen),
             model="tiny", backend=hf, temperature=0, max_tokens=3, progress=False)
    assert not any(rows_of(gen)["output_valid"])
    config = tmp_path / "filter.yaml"
    config.write_text("stages: [valid_output]\n")
    assert main(["filter", "--data", str(gen), "--out", str(out), "--config", str(config)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == 0 and report["dropped"] == 6


def test_judge_score_comes_from_its_json(tiny_model):
    rows = [{"id": str(i), "question": "What is 2 + 3?", "completion": f"2 + 3 = {5 + i}"}
            for i in range(3)]
    kept, _ = Score(model=tiny_model, backend="hf").apply(rows)
    for row in kept:
        reply = json.loads(row["score_reply"], strict=False)
        assert row["score"] == reply["score"] and 1 <= row["score"] <= 10
