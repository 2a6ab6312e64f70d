"""Bad input gets one line, exit 2, and nothing written: sampling and numeric options, prompts
longer than the model's context, null fields a template prints, recipe keys, and the record a
failed recipe stage leaves."""

import json

import pytest
import yaml

from distill.cli import main
from distill.datagen import generate, load_prompt
from distill.datagen.backends.hf import HFBackend
from distill.errors import DistillError
from distill.recipe import run_recipe


@pytest.fixture(scope="module")
def hf(tiny_model):
    return HFBackend(tiny_model, batch_size=4)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("flag,value,message", [
    ("--max-tokens", "0", "max_tokens (--max-tokens) must be >= 1, got 0"),
    ("--temperature", "-1", "temperature (--temperature) must be >= 0, got -1.0"),
    ("--top-p", "0", "top_p (--top-p) must be > 0, got 0.0"),
    ("--top-p", "1.5", "top_p (--top-p) must be in (0, 1], got 1.5"),
    ("--n", "0", "n (--n) must be >= 1, got 0"),
    ("--limit", "-1", "limit (--limit) must be >= 1, got -1"),
    ("--limit", "0", "limit (--limit) must be >= 1, got 0"),
    ("--batch-size", "0", "batch_size (--batch-size) must be >= 1, got 0"),
    ("--logprobs", "-1", "logprobs (--logprobs) must be >= 0, got -1"),
    ("--ray-workers", "0", "ray_workers (--ray-workers) must be >= 1, got 0"),
])
def test_generate_refuses_bad_numbers_before_anything_is_written(
        tiny_model, problems, tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    code = main(["generate", "--prompt", "gsm8k-cot", "--data", str(problems), "--out", str(out),
                 "--teacher", tiny_model, "--backend", "hf", "--max-tokens", "4", flag, value])
    assert code == 2 and one_error_line(capsys) == f"error: {message}"
    assert not out.exists()


def test_backend_options_for_another_backend_are_refused(tiny_model, problems, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--prompt", "gsm8k-cot", "--data", str(problems), "--out", str(out),
                 "--teacher", tiny_model, "--backend", "hf", "--concurrency", "4"])
    assert code == 2 and "--concurrency is for --backend openai, not hf" in one_error_line(capsys)
    assert not out.exists()


def test_the_python_api_checks_the_same_way(hf, problems, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DistillError, match=r"max_tokens \(--max-tokens\) must be >= 1"):
        generate("gsm8k-cot", str(problems), str(out), backend=hf, max_tokens=0, progress=False)
    with pytest.raises(DistillError, match="must be an integer, got '8'"):
        generate("gsm8k-cot", str(problems), str(out), backend=hf, max_tokens="8",
                 progress=False)
    assert not out.exists()


def test_a_prompt_file_with_bad_sampling_is_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nkind: cot\nuser: '{{ question }}'\nsampling: {temperature: -0.5}\n")
    with pytest.raises(DistillError, match=rf"^{path}: sampling: temperature \(--temperature\) "
                                           "must be >= 0, got -0.5$"):
        load_prompt(path)


@pytest.mark.parametrize("flag,value", [("--n", "0"), ("--limit", "-1"), ("--batch-size", "0"),
                                        ("--max-tokens", "0"), ("--temperature", "-1")])
def test_eval_refuses_bad_numbers_before_anything_is_written(tiny_model, problems, tmp_path,
                                                             capsys, flag, value):
    out = tmp_path / "eval"
    code = main(["eval", "--model", tiny_model, "--data", str(problems), "--out", str(out),
                 "--backend", "hf", "--no-progress", flag, value])
    assert code == 2 and flag in one_error_line(capsys)
    assert not out.exists()


def test_eval_compare_refuses_bad_numbers(tmp_path, capsys):
    code = main(["eval", "compare", str(tmp_path), "--out", str(tmp_path / "c"),
                 "--bootstrap", "0"])
    assert code == 2 and "bootstrap (--bootstrap) must be >= 1, got 0" in one_error_line(capsys)


def long_source(tmp_path):
    return write_rows(tmp_path / "problems.jsonl", [
        {"id": "short", "question": "Tom has 3 apples. How many?", "answer": "3"},
        {"id": "long", "question": "Tom has 3 apples and buys more. " * 400, "answer": "4"}])


def test_a_prompt_longer_than_the_context_names_its_row(hf, tmp_path):
    source, out = long_source(tmp_path), tmp_path / "out"
    with pytest.raises(DistillError) as e:
        generate("gsm8k-cot", str(source), str(out), backend=hf, max_tokens=4, progress=False)
    message = str(e.value)
    assert message.startswith(f"{source}:2: its prompt is ")
    tokens = int(message.split("its prompt is ")[1].split()[0])
    assert tokens > 1024 and "the model's context is 1024 (max_position_embeddings" in message
    assert not out.exists()


def test_the_cli_checks_prompt_length_before_the_model_loads(tiny_model, tmp_path, capsys):
    source, out = long_source(tmp_path), tmp_path / "out"
    code = main(["generate", "--prompt", "gsm8k-cot", "--data", str(source), "--out", str(out),
                 "--teacher", tiny_model, "--backend", "hf", "--max-tokens", "4",
                 "--no-progress"])
    line = one_error_line(capsys)
    assert code == 2 and f"{source}:2: its prompt is " in line and "context is 1024" in line
    assert not out.exists()
    # the rows that fit still generate
    assert main(["generate", "--prompt", "gsm8k-cot", "--data", str(source), "--out", str(out),
                 "--teacher", tiny_model, "--backend", "hf", "--max-tokens", "4", "--limit", "1",
                 "--no-progress"]) == 0


def test_a_null_field_the_template_prints_names_the_row(hf, tmp_path, capsys):
    source = write_rows(tmp_path / "problems.jsonl", [
        {"id": "a", "question": "Tom has 3 apples. How many?", "answer": "3"},
        {"id": "b", "question": None, "answer": "4"}])
    out = tmp_path / "out"
    with pytest.raises(DistillError, match=rf"^{source}:2: field 'question' is null"):
        generate("gsm8k-cot", str(source), str(out), backend=hf, max_tokens=4, progress=False)
    assert not out.exists()
    assert main(["prompts", "render", "gsm8k-cot", "--row", '{"question": null}']) == 2
    assert "--row: field 'question' is null" in one_error_line(capsys)


def test_a_null_field_the_template_only_tests_is_fine(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nkind: cot\n"
                    "user: '{{ question }}{% if hint %} Hint: {{ hint }}{% endif %}'\n")
    messages = load_prompt(path).render({"question": "Q?", "hint": None})
    assert messages[-1]["content"] == "Q?"


def recipe(tmp_path, tiny_model, **sections):
    spec = {"teacher": {"model": tiny_model, "backend": "hf"}, "student": {"model": tiny_model},
            "generate": {"task": "gsm8k", "limit": 2, "max_tokens": 4, "progress": False},
            **sections}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("section,cfg,message", [
    ("generate", {"task": "gsm8k", "max_token": 4},
     "generate: unknown key 'max_token'; did you mean 'max_tokens'?"),
    ("generate", {"task": "gsm8k", "backend": "hf"},
     "generate: 'backend' is not set here; it comes from teacher: {backend: ...}"),
    ("publish", {"test_sise": 0.2}, "publish: unknown key 'test_sise'; did you mean 'test_size'?"),
    ("train", {"max_step": 2}, "train: unknown key 'max_step'; did you mean 'max_steps'?"),
    ("train", {"method": "kd", "kd_temprature": 2.0},
     "train: unknown key 'kd_temprature'; did you mean 'kd_temperature'?"),
    ("filter", {"stage": ["quality"]}, "filter: unknown key 'stage'; did you mean 'stages'?"),
    ("filter", {"splt": "train"}, "filter: unknown key 'splt'; did you mean 'split'?"),
    ("train", {"fields": {"completion": "response"}},
     "train: unknown key 'fields'; did you mean 'field'?"),
    ("eval", {"limt": 3}, "eval: unknown key 'limt'; did you mean 'limit'?"),
    ("eval", {"teacher": {"shot": 8}}, "eval: teacher: unknown key 'shot'; did you mean 'shots'?"),
    ("eval", {"n": 0}, "eval: n (--n) must be >= 1, got 0"),
    ("teacher", {"model": "x", "bakend": "hf"},
     "teacher: unknown key 'bakend'; did you mean 'backend'?"),
])
def test_recipe_keys_are_checked_per_section_before_any_stage_runs(
        tiny_model, tmp_path, capsys, section, cfg, message):
    path, out = recipe(tmp_path, tiny_model, **{section: cfg}), tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"error: {path}: {message}"
    assert not out.exists()


def test_recipe_stages_take_the_data_keys(tmp_path):
    """filter, publish and train read any data: their data keys pass the check."""
    from distill.recipe_check import check_recipe

    data = {"data": str(tmp_path), "split": "train", "subset": None, "revision": None,
            "field": {"completion": "response"}}
    check_recipe({"filter": data, "publish": data, "train": data}, tmp_path / "r.yaml")


def test_a_failed_stage_is_recorded_as_failed_with_its_reason(tiny_model, tmp_path):
    path = recipe(tmp_path, tiny_model, generate={"source": str(tmp_path / "missing.jsonl")})
    out = tmp_path / "run"
    with pytest.raises(DistillError, match="missing.jsonl: no such file or folder"):
        run_recipe(path, out)
    state = json.loads((out / "state.json").read_text())["generate"]
    assert state["status"] == "failed"
    assert state["error"] == f"{tmp_path / 'missing.jsonl'}: no such file or folder"
