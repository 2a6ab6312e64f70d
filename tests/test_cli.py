"""``distill generate`` on bad input: one clear line, exit 2, nothing already written lost; the
one CLI grammar: each renamed flag in its new and old spelling, no abbreviations."""

import argparse

import pytest

from distill import io
from distill.cli import build_parser, main
from distill.flags import Parser, take_positionals


@pytest.fixture
def out_with_rows(tiny_model, problems, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "--prompt", "gsm8k-cot", "--data", str(problems), "--out",
                 str(out), "--teacher", tiny_model, "--backend", "hf", "--max-tokens", "4",
                 "--temperature", "0", "--limit", "2", "--no-progress"]) == 0
    return out


def bad_inputs(tmp_path, problems):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nkind: cot\nuser: 'hi\n")
    bad_row = tmp_path / "bad.jsonl"
    bad_row.write_text('{"question": "fine"}\n{"question": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"problem": "1+1?"}\n')
    return {
        "missing prompt file": (["--prompt", str(tmp_path / "nope.yaml")], "nope.yaml' not found"),
        "invalid prompt file": (["--prompt", str(bad_yaml)], "bad.yaml:4: invalid YAML"),
        "undefined template variable": (["--data", str(nofield)],
                                        "nofield.jsonl:1: prompt 'gsm8k-cot'"),
        "mapping to a missing field": (["--field", "question=problem"],
                                       "problems.jsonl:1: --field question=problem"),
        "empty source": (["--data", str(empty)], "empty.jsonl: the source is empty"),
        "unreadable row": (["--data", str(bad_row)], "bad.jsonl:2: not valid JSON"),
        "missing model": (["--teacher", str(tmp_path / "no-model"), "--out", str(tmp_path / "new")],
                          "cannot load model"),
    }


@pytest.mark.parametrize("case", ["missing prompt file", "invalid prompt file",
                                  "undefined template variable", "mapping to a missing field",
                                  "empty source", "unreadable row", "missing model"])
def test_bad_input_gets_one_line_and_keeps_written_rows(case, out_with_rows, tiny_model,
                                                        problems, tmp_path, capsys):
    before = io.read_rows(out_with_rows)
    capsys.readouterr()
    args = {"--prompt": "gsm8k-cot", "--data": str(problems), "--out": str(out_with_rows),
            "--teacher": tiny_model, "--backend": "hf", "--max-tokens": "4", "--temperature": "0",
            "--limit": "2"}
    override, expected = bad_inputs(tmp_path, problems)[case]
    extra = []
    for flag, value in zip(override[::2], override[1::2]):
        if flag in args:
            args[flag] = value
        else:
            extra += [flag, value]
    argv = ["generate", *[x for kv in args.items() for x in kv], *extra, "--no-progress"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0], err
    assert io.read_rows(out_with_rows) == before


def test_field_flag_must_be_target_equals_field(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "gsm8k-cot", "--data", "x", "--out", "y",
              "--field", "question"])
    assert "--field takes TARGET=SOURCE_FIELD" in capsys.readouterr().err


def parse(argv):
    args = build_parser().parse_args(argv)
    take_positionals(args)
    return args


def notice(old, new):
    return f"distill: {old} is deprecated and will be removed in 0.3; use {new}"


# command, its other flags, the new and the old spelling of the renamed input: {dest: value}
RENAMES = {
    "generate --source": (["generate", "--prompt", "p", "--out", "o"], ["--data", "x"],
                          ["--source", "x"], {"data": "x"}, [notice("--source", "--data")]),
    "generate --model": (["generate", "--prompt", "p", "--data", "d", "--out", "o"],
                         ["--teacher", "m"], ["--model", "m"], {"teacher": "m"},
                         [notice("--model", "--teacher")]),
    "filter IN_DIR OUT_DIR": (["filter"], ["--data", "x", "--out", "y"], ["x", "y"],
                              {"data": "x", "out": "y"},
                              [notice("the positional IN_DIR", "--data"),
                               notice("the positional OUT_DIR", "--out")]),
    "publish IN_DIR": (["publish", "--out", "o"], ["--data", "x"], ["x"], {"data": "x"},
                       [notice("the positional IN_DIR", "--data")]),
    "publish --to": (["publish", "--data", "d"], ["--out", "o"], ["--to", "o"], {"out": "o"},
                     [notice("--to", "--out")]),
    "show DIR": (["show"], ["--data", "x"], ["x"], {"data": "x"},
                 [notice("the positional DIR", "--data")]),
    "eval --task": (["eval", "--out", "o"], ["--data", "gsm8k"], ["--task", "gsm8k"],
                    {"data": "gsm8k"}, [notice("--task", "--data")]),
}


@pytest.mark.parametrize("rename", list(RENAMES))
def test_new_spelling_and_old_spelling_with_a_one_line_notice(rename, capsys):
    command, new, old, values, notices = RENAMES[rename]
    args = parse(command + new)
    assert {k: getattr(args, k) for k in values} == values
    assert capsys.readouterr().err == ""
    args = parse(command + old)
    assert {k: getattr(args, k) for k in values} == values
    assert capsys.readouterr().err.splitlines() == notices


@pytest.mark.parametrize("argv, missing", [
    (["generate", "--prompt", "p", "--out", "o"], "distill generate needs --data"),
    (["filter"], "distill filter needs --data and --out"),
    (["filter", "--data", "d"], "distill filter needs --out"),
    (["publish", "--data", "d"], "distill publish needs --out"),
    (["show"], "distill show needs --data"),
    (["eval", "--out", "o"], "distill eval needs --data"),
])
def test_a_missing_input_or_output_is_one_clear_error(argv, missing, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {missing}" + (
        " (or the verb compare: distill eval compare RUN_DIR... --out DIR)"
        if argv[0] == "eval" else "")]


@pytest.mark.parametrize("argv", [
    ["generate", "--prompt", "p", "--sour", "x", "--out", "o"],
    ["generate", "--prompt", "p", "--data", "x", "--out", "o", "--teach", "m"],
    ["filter", "--dat", "x", "--out", "o"],
    ["publish", "--data", "x", "--ou", "o"],
    ["show", "--dat", "x"],
    ["eval", "--tas", "gsm8k", "--out", "o"],
    ["eval", "compare", "a", "--ou", "o"],
])
def test_abbreviated_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        parse(argv)
    assert refused.value.code == 2 and "error:" in capsys.readouterr().err


def test_an_input_given_in_both_spellings_is_refused():
    with pytest.raises(SystemExit, match="give --data once"):
        parse(["filter", "x", "--data", "y", "--out", "o"])


def test_every_parser_of_these_commands_refuses_abbreviations():
    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")

    commands = ("generate", "filter", "run", "prompts", "publish", "show", "eval")
    parsers = [(path, p) for path, p in walk(build_parser(), "distill")
               if path == "distill" or path.split()[1] in commands]
    assert len(parsers) == 12
    for path, parser in parsers:
        assert isinstance(parser, Parser) and not parser.allow_abbrev, path
