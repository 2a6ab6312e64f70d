"""``distill generate`` on bad input: one clear line, exit 2, nothing already written lost."""

import pytest

from distill import io
from distill.cli import main


@pytest.fixture
def out_with_rows(tiny_model, problems, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "--prompt", "gsm8k-cot", "--source", str(problems), "--out",
                 str(out), "--model", tiny_model, "--backend", "hf", "--max-tokens", "4",
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
        "undefined template variable": (["--source", str(nofield)],
                                        "nofield.jsonl:1: prompt 'gsm8k-cot'"),
        "mapping to a missing field": (["--field", "question=problem"],
                                       "problems.jsonl:1: --field question=problem"),
        "empty source": (["--source", str(empty)], "empty.jsonl: the source is empty"),
        "unreadable row": (["--source", str(bad_row)], "bad.jsonl:2: not valid JSON"),
        "missing model": (["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "new")],
                          "cannot load model"),
    }


@pytest.mark.parametrize("case", ["missing prompt file", "invalid prompt file",
                                  "undefined template variable", "mapping to a missing field",
                                  "empty source", "unreadable row", "missing model"])
def test_bad_input_gets_one_line_and_keeps_written_rows(case, out_with_rows, tiny_model,
                                                        problems, tmp_path, capsys):
    before = io.read_rows(out_with_rows)
    capsys.readouterr()
    args = {"--prompt": "gsm8k-cot", "--source": str(problems), "--out": str(out_with_rows),
            "--model": tiny_model, "--backend": "hf", "--max-tokens": "4", "--temperature": "0",
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
        main(["generate", "--prompt", "gsm8k-cot", "--source", "x", "--out", "y",
              "--field", "question"])
    assert "--field takes TARGET=SOURCE_FIELD" in capsys.readouterr().err
