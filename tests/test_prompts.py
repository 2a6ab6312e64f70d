import pytest

from distill.cli import main
from distill.datagen.prompts import list_prompts, load_prompt
from distill.errors import DistillError

SHIPPED = {"gsm8k-cot", "cot-structured", "cot-socratic", "gsm8k-cot-8shot", "gsm8k-pot",
           "instruction", "gsm8k-evol", "self-instruct"}


def test_shipped_prompts_load_and_render():
    prompts = {p.name: p for p in list_prompts()}
    assert SHIPPED <= set(prompts)
    for name in SHIPPED - {"instruction"}:
        messages = prompts[name].render({"question": "What is 6 x 7?"})
        assert messages[-1]["role"] == "user" and "What is 6 x 7?" in messages[-1]["content"]
        assert prompts[name].sampling["max_tokens"] > 0


def test_eight_shot_prompt_has_eight_worked_examples_as_turns():
    messages = load_prompt("gsm8k-cot-8shot").render({"question": "Q?"})
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 8 + ["user"]
    assert all("####" in m["content"] for m in messages if m["role"] == "assistant")


def test_shots_keeps_the_first_exemplars_and_rejects_too_many():
    pf = load_prompt("gsm8k-cot-8shot")
    two = pf.with_shots(2).render({"question": "Q?"})
    assert [m["role"] for m in two] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert two[2]["content"] == pf.few_shot[0]["response"]
    assert [m["role"] for m in pf.with_shots(0).render({"question": "Q?"})] == ["system", "user"]
    with pytest.raises(DistillError, match=r"shots must be in \[0, 8\]"):
        pf.with_shots(9)


def test_instruction_grid_expands_topic_into_one_row_per_task():
    pf = load_prompt("instruction")
    rows = pf.expand({"topic": "tides"}, "topics.txt:1")
    assert [r["task"] for r in rows] == ["explain", "summarize", "analyze", "compare", "list",
                                         "evaluate"]
    assert pf.render(rows[0])[-1]["content"] == "Explain tides in simple terms."
    with pytest.raises(DistillError, match="unknown task 'dance'"):
        pf.expand({"topic": "tides"}, "x", ["dance"])


def test_undefined_template_variable_names_row_and_field():
    with pytest.raises(DistillError) as e:
        load_prompt("gsm8k-cot").render({"problem": "1+1"}, "data.jsonl:7")
    assert "data.jsonl:7" in str(e.value) and "'question'" in str(e.value)


@pytest.mark.parametrize("text, match", [
    ("name: x\nkind: cot\nuser: [unclosed\n", r"bad\.yaml:\d+: invalid YAML"),
    ("name: x\nkind: cot\n", "missing required field 'user'"),
    ("name: x\nkind: poem\nuser: hi\n", "field 'kind' is 'poem'"),
    ("name: x\nkind: cot\nuser: hi\ncolour: red\n", "unknown field 'colour'"),
    ("name: x\nkind: cot\nuser: hi\nsampling: {temp: 1}\n", "unknown sampling field 'temp'"),
    ("name: x\nkind: cot\nuser: '{{ question '\n", "field 'user', template line 1"),
    ("name: x\nkind: cot\nuser: hi\nfew_shot: [{question: q}]\n", r"few_shot\[0\] needs"),
])
def test_invalid_prompt_files_are_named_with_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DistillError, match=match):
        load_prompt(path)


def test_unknown_prompt_name_lists_shipped_ones():
    with pytest.raises(DistillError, match="not found; shipped prompts: .*gsm8k-cot"):
        load_prompt("no-such-prompt")


def test_cli_prompts_list_show_render(capsys):
    assert main(["prompts", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SHIPPED)
    assert main(["prompts", "show", "gsm8k-pot"]) == 0
    assert "kind: pot" in capsys.readouterr().out
    assert main(["prompts", "render", "gsm8k-cot", "--row", '{"question": "2+2?"}']) == 0
    assert "Problem: 2+2?" in capsys.readouterr().out
    assert main(["prompts", "render", "gsm8k-cot", "--row", '{"q": 1}']) == 2
    assert "needs a field the row lacks" in capsys.readouterr().err
