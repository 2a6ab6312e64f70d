"""``distill train``'s flags are the config dataclasses' fields: parsed once, no abbreviations,
old spellings with a notice."""

from __future__ import annotations

import pytest

from distill.cli import build_parser, main
from distill.errors import DistillError
from distill.sft.config import DistillSFTConfig, build_config, load_train_config, parse_train_args
from distill.sft.kd.config import DistillKDConfig

NOTICE = "is deprecated and will be removed in 0.3"


def test_flags_recipe_and_inputs_are_one_parse(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 2e-5\nwarmup_steps: 3\nstudent: s\ndata: d\n")
    inputs, config = parse_train_args(DistillSFTConfig, [
        "--config", str(recipe), "--out", "o", "--reasoning-weight", "0.5", "--answer_weight",
        "2", "--lora", "--restart", "--learning-rate", "1e-3", "--eval-data", "e"])
    assert (inputs.student, inputs.data, inputs.out, inputs.eval_data) == ("s", "d", "o", "e")
    assert (config.learning_rate, config.warmup_steps, config.output_dir) == (1e-3, 3, "o")
    assert (config.reasoning_weight, config.answer_weight) == (0.5, 2.0)
    assert config.use_lora and config.restart
    assert NOTICE not in capsys.readouterr().err


def test_abbreviations_and_output_dir_are_refused():
    with pytest.raises(DistillError, match="unknown training arguments: --learning_rat 1e-4"):
        parse_train_args(DistillSFTConfig, ["--data", "d", "--out", "o", "--learning_rat", "1e-4"])
    with pytest.raises(DistillError, match="unknown training arguments: --answer-w 2"):
        parse_train_args(DistillSFTConfig, ["--data", "d", "--out", "o", "--answer-w", "2"])
    with pytest.raises(DistillError, match="the output folder is --out"):
        parse_train_args(DistillSFTConfig, ["--data", "d", "--output_dir", "x"])
    with pytest.raises(DistillError, match="needs --data and --out"):
        parse_train_args(DistillSFTConfig, ["--data", "d"])
    with pytest.raises(DistillError, match="not DistillSFTConfig fields: bogus"):
        build_config(output_dir="o", bogus=1)


@pytest.mark.parametrize(("verb", "shown"), [("sft", "--answer-weight"), ("kd", "--kd-temperature"),
                                             ("onpolicy", "--teacher"), ("gkd", "--teacher")])
def test_help_lists_the_config_fields(verb, shown, capsys):
    for flag in ("--help", "--help-config"):
        with pytest.raises(SystemExit) as done:
            main(["train", verb, flag])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: distill train {verb}" in out and shown in out
        assert "--learning_rate" in out and "--student" in out and "--model " not in out


def test_student_was_model(tmp_path, capsys):
    inputs, _ = parse_train_args(DistillSFTConfig, ["--student", "s", "--data", "d", "--out", "o"])
    assert inputs.student == "s" and NOTICE not in capsys.readouterr().err
    inputs, _ = parse_train_args(DistillSFTConfig, ["--model", "m", "--data", "d", "--out", "o"])
    assert inputs.student == "m"
    assert f"--model {NOTICE}; use --student" in capsys.readouterr().err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: m\n")
    assert load_train_config(recipe) == {"student": "m"}
    assert f"the key 'model' {NOTICE}; use 'student'" in capsys.readouterr().err


def test_kd_temperature_was_temperature(tmp_path, capsys):
    common = ["--data", "d", "--out", "o", "--teacher", "t"]
    _, config = parse_train_args(DistillKDConfig, [
        *common, "--kd-temperature", "2", "--kd_temperature_end", "3",
        "--kd-temperature-schedule", "linear"])
    assert (config.kd_temperature, config.kd_temperature_end) == (2.0, 3.0)
    assert config.kd_temperature_schedule == "linear" and NOTICE not in capsys.readouterr().err
    _, old = parse_train_args(DistillKDConfig, [
        *common, "--temperature", "2", "--temperature_end", "3", "--temperature-schedule",
        "linear"])
    assert (old.kd_temperature, old.kd_temperature_end, old.kd_temperature_schedule) == \
        (2.0, 3.0, "linear")
    err = capsys.readouterr().err
    for old_flag, new in (("--temperature", "--kd-temperature"),
                          ("--temperature_end", "--kd-temperature-end"),
                          ("--temperature-schedule", "--kd-temperature-schedule")):
        assert f"{old_flag} {NOTICE}; use {new}" in err
    recipe = tmp_path / "kd.yaml"
    recipe.write_text("temperature: 4\nteacher: t\n")
    _, config = parse_train_args(DistillKDConfig, ["--config", str(recipe), "--data", "d",
                                                   "--out", "o"])
    assert config.kd_temperature == 4.0
    assert f"the key 'temperature' {NOTICE}; use 'kd_temperature'" in capsys.readouterr().err
    config = build_config(config_class=DistillKDConfig, output_dir="o", teacher="t",
                          temperature=1.5)
    assert config.kd_temperature == 1.5 and NOTICE in capsys.readouterr().err


def test_onpolicy_teacher_and_sampling_temperature(capsys):
    from distill.sft.onpolicy.train import DistillOnPolicyConfig

    _, config = parse_train_args(DistillOnPolicyConfig, ["--data", "d", "--out", "o", "--teacher",
                                                         "t", "--temperature", "0.5"])
    assert config.teacher_model_name_or_path == "t" and config.temperature == 0.5
    _, config = parse_train_args(DistillOnPolicyConfig, ["--data", "d", "--out", "o",
                                                         "--teacher_model_name_or_path", "t"])
    assert config.teacher_model_name_or_path == "t" and NOTICE not in capsys.readouterr().err
    _, config = parse_train_args(DistillOnPolicyConfig, ["--data", "d", "--out", "o", "--teacher",
                                                         "t", "--max-new-tokens", "7"])
    assert config.max_completion_length == 7
    assert f"--max-new-tokens {NOTICE}; use --max-completion-length" in capsys.readouterr().err
    _, config = parse_train_args(DistillOnPolicyConfig, ["--data", "d", "--out", "o",
                                                         "--teacher-server-url", "http://t:8000"])
    assert config.teacher_model_server_url == "http://t:8000" and not config.use_vllm


def test_train_verbs_pass_their_arguments_on():
    args = build_parser().parse_args(["train", "kd", "--student", "s", "--kd-temperature", "2"])
    assert args.verb == "kd" and args.argv == ["--student", "s", "--kd-temperature", "2"]
