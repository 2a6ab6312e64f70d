"""vLLM engine options: ``--engine-arg KEY=VALUE`` and a recipe's ``engine_args``, typed from
vLLM's ``EngineArgs`` and checked before any engine starts (none starts here)."""

from __future__ import annotations

import pytest
import yaml

from distill.cli import main
from distill.errors import DistillError
from distill.recipe import run_recipe
from distill.recipe_check import check_recipe


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def gen(problems, out, *flags) -> list[str]:
    return ["generate", "--prompt", "gsm8k-cot", "--data", str(problems), "--out", str(out),
            "--no-progress", *flags]


def test_engine_args_need_the_vllm_backend(tiny_model, problems, tmp_path, capsys):
    code = main(gen(problems, tmp_path / "out", "--teacher", tiny_model, "--backend", "hf",
                    "--engine-arg", "max_model_len=64"))
    assert code == 2 and "--engine-arg is for --backend vllm, not hf" in one_error_line(capsys)


def test_engine_arg_needs_key_and_value(problems, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(gen(problems, tmp_path / "out", "--engine-arg", "max_model_len"))
    assert e.value.code == 2
    assert "--engine-arg: expected KEY=VALUE, got 'max_model_len'" in capsys.readouterr().err


@pytest.mark.vllm
def test_engine_options_are_typed_from_engine_args():
    pytest.importorskip("vllm")
    from distill.datagen.backends.vllm import engine_options

    assert engine_options({"max_model_len": "512", "gpu_memory_utilization": "0.5",
                           "enforce_eager": "false", "dtype": "float32", "quantization": "none",
                           "hf_overrides": '{"rope_theta": 5}', "block_size": 16}) == {
        "max_model_len": 512, "gpu_memory_utilization": 0.5, "enforce_eager": False,
        "dtype": "float32", "quantization": None, "hf_overrides": {"rope_theta": 5},
        "block_size": 16}
    for bad, message in [({"dtype": "fp99"}, "dtype is one of auto, half"),
                         ({"max_model_len": "big"}, "max_model_len takes int"),
                         ({"model": "x"}, "engine arg 'model' is set by distill: use --teacher")]:
        with pytest.raises(DistillError, match=message):
            engine_options(bad)


@pytest.mark.vllm
def test_unknown_engine_arg_names_the_closest(tiny_model, problems, tmp_path, capsys):
    pytest.importorskip("vllm")
    code = main(gen(problems, tmp_path / "out", "--teacher", tiny_model, "--backend", "vllm",
                    "--engine-arg", "max_model_lenght=64"))
    line = one_error_line(capsys)
    assert code == 2 and "unknown engine arg 'max_model_lenght' (--engine-arg); did you mean " \
        "max_model_len" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.vllm
def test_engine_arg_reaches_the_backend_before_it_loads(tiny_model, problems, tmp_path, capsys):
    """max_model_len=32, typed to an int, is the context the prompts are checked against."""
    pytest.importorskip("vllm")
    code = main(gen(problems, tmp_path / "out", "--teacher", tiny_model, "--backend", "vllm",
                    "--engine-arg", "max_model_len=32"))
    assert code == 2 and "the model's context is 32 (max_model_len)" in one_error_line(capsys)


@pytest.mark.vllm
def test_recipe_engine_args(tiny_model, problems, tmp_path):
    pytest.importorskip("vllm")
    spec = {"teacher": {"model": tiny_model, "backend": "vllm"},
            "generate": {"source": str(problems), "progress": False,
                         "engine_args": {"max_model_len": 32}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DistillError, match=r"the model's context is 32 \(max_model_len\)"):
        run_recipe(path, tmp_path / "run")


def test_recipe_takes_engine_args_and_the_ray_executor(tmp_path):
    generate = {"source": "p.jsonl", "engine_args": {"max_model_len": 4096},
                "executor": "ray", "ray_address": "10.0.0.1:6379"}
    check_recipe({"generate": generate}, tmp_path / "r.yaml")
    with pytest.raises(DistillError, match="unknown key 'engine_arg'; did you mean "
                                           "'engine_args'"):
        check_recipe({"generate": {"engine_arg": {}}}, tmp_path / "r.yaml")


def test_eval_takes_the_same_backend_flags(tmp_path, capsys):
    code = main(["eval", "--data", "gsm8k", "--out", str(tmp_path / "ev"), "--backend", "hf",
                 "--engine-arg", "max_model_len=64", "--no-progress"])
    assert code == 2 and "--engine-arg is for --backend vllm, not hf" in one_error_line(capsys)
    code = main(["eval", "--data", "gsm8k", "--out", str(tmp_path / "ev"), "--backend", "hf",
                 "--api-key-env", "MY_KEY", "--no-progress"])
    assert code == 2 and "--api-key-env is for --backend openai, not hf" in \
        one_error_line(capsys)
    assert not (tmp_path / "ev").exists()
