"""The parse and verify filter stages on rows shaped like the ones ``distill generate`` writes."""

import pytest

from distill import io
from distill.datagen.plan import row_id
from distill.errors import DistillError
from distill.filters.parse import Parse
from distill.filters.pipeline import load_filter_config, write_rows
from distill.filters.stages import build_stages
from distill.filters.verify import Verify


def generated(completion, gold="72", kind="cot", index=0):
    template = {"cot": "gsm8k-cot", "pot": "gsm8k-pot"}[kind]
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as " \
               "many clips in May. How many clips did Natalia sell altogether in April and May?"
    return {"id": row_id(f"{template}\x00q{index}", 0), "source_id": f"q{index}", "sample_index": 0,
            "question": question, "gold": gold, "template": template, "kind": kind, "task": None,
            "messages": [{"role": "user", "content": question}], "completion": completion,
            "finish_reason": "stop", "prompt_tokens": 60, "tokens": 40, "model": "teacher",
            "backend": "hf", "sampling": "{}", "source": "gsm8k"}


COT = "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\n#### 72"
POT = ("Let me write the program.\n```python\napril = 48\nmay = april // 2\nprint(april + may)\n```\n"
       "It prints the total.")


def test_parse_adds_the_answer_and_its_span():
    row = generated(COT)
    kept, dropped = Parse().apply([row])
    assert kept == [row] and not dropped
    assert (row["answer"], row["answer_raw"], row["answer_format"]) == ("72", "72", "gsm8k")
    start, end = row["answer_span"]
    assert row["completion"][start:end] == row["answer_raw"] and end == len(COT)
    assert row["reasoning"] == "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips."
    assert row["code"] is None


@pytest.mark.parametrize("completion, answer, raw, fmt", [
    ("She earns $1,200 a month, so in a year $14,400.\n#### $14,400", "14400", "$14,400", "gsm8k"),
    ("Half of 3 is 1.5, plus 1.5 is 3. The final answer is $\\boxed{3}$.", "3", "3", "boxed"),
    ("That leaves a quarter of the pie. The answer is 1/4.", "0.25", "1/4", "answer_is"),
])
def test_parse_finds_every_answer_format(completion, answer, raw, fmt):
    row = generated(completion)
    Parse().apply([row])
    start, end = row["answer_span"]
    assert (row["answer"], row["answer_raw"], row["answer_format"]) == (answer, raw, fmt)
    assert completion[start:end] == raw


def test_parse_drops_rows_without_an_answer():
    stage = Parse()
    kept, dropped = stage.apply([generated(COT), generated("I am not sure how to do this.", index=1)])
    assert len(kept) == 1
    assert dropped[0]["drop_reason"] == "no answer" and dropped[0]["dropped_by"] == "parse"
    assert dropped[0]["answer"] is None and dropped[0]["answer_span"] is None
    assert stage.stats.to_dict() == {"seen": 2, "kept": 1, "dropped": 1,
                                     "reasons": {"no answer": 1}}


def test_parse_keeps_rows_without_an_answer_when_asked():
    kept, dropped = Parse(drop_missing=False).apply([generated("No idea.")])
    assert not dropped and kept[0]["answer"] is None and kept[0]["reasoning"] == "No idea."


def test_the_last_number_fallback_is_an_opt_in_that_marks_its_rows():
    rows = [generated("48 plus 24 makes 72"), generated(COT, index=1)]
    kept, dropped = Parse().apply([dict(r) for r in rows])
    assert [r["answer_format"] for r in kept] == ["gsm8k"]
    assert dropped[0]["drop_reason"] == "only a last-number fallback"
    kept, dropped = Parse(allow_last_number=True).apply(rows)
    assert not dropped and [(r["answer"], r["answer_format"]) for r in kept] == [
        ("72", "fallback"), ("72", "gsm8k")]


@pytest.mark.parametrize("preset", ["cot", "pot", "rejection-sampling", "instruction"])
def test_no_shipped_preset_guesses_a_step_number_as_the_answer(preset):
    """The issue's case: a completion that states no answer, whose last number is a step's."""
    stages = build_stages(load_filter_config(preset))
    assert all(not s.allow_last_number for s in stages if isinstance(s, Parse))
    rows = [generated("15 - 4 = 11, so 11 remain (out of the original 15)", gold="15")]
    for stage in (s for s in stages if isinstance(s, (Parse, Verify))):
        rows, _ = stage.apply(rows)
    assert not any(r.get("correct") for r in rows)


def test_verify_drops_ambiguous_answers_with_their_own_reason():
    rows = [generated("#### 72 or 73"), generated("The answer is about 72.", index=1),
            generated("#### 72 apples and 3 pears", index=2), generated("#### 7:20", index=3)]
    parsed, _ = Parse().apply(rows)
    stage = Verify()
    kept, dropped = stage.apply(parsed)
    assert not kept and not any(r["correct"] for r in dropped)
    assert stage.stats.reasons == {"ambiguous answer": 3, "wrong answer": 1}
    assert [r["answer"] for r in dropped] == ["72 or 73", "about 72", "72 apples and 3 pears",
                                              "7:20"]


def test_parse_can_refuse_the_last_number_fallback():
    rows = [generated("48 plus 24 makes 72"), generated(COT, index=1)]
    kept, dropped = Parse(allow_last_number=False).apply(rows)
    assert [r["answer_format"] for r in kept] == ["gsm8k"]
    assert dropped[0]["drop_reason"] == "only a last-number fallback"
    assert dropped[0]["answer"] is None


def test_parse_takes_the_program_of_a_pot_row_and_leaves_its_answer_to_execute():
    row = generated(POT, kind="pot")
    kept, dropped = Parse().apply([row, generated("The total is 72.", kind="pot", index=1)])
    assert kept == [row]
    assert row["code"] == "april = 48\nmay = april // 2\nprint(april + may)"
    assert row["answer"] is None and row["answer_span"] is None
    assert row["reasoning"] == "Let me write the program."
    assert dropped[0]["drop_reason"] == "no code block"


def test_verify_marks_and_drops_wrong_answers():
    rows = [generated(COT),
            generated(COT.replace("#### 72", "#### 72.00"), index=1),
            generated(COT.replace("#### 72", "#### 7.2"), index=2),
            generated("I give up.", index=3)]
    parsed, _ = Parse(drop_missing=False).apply(rows)
    stage = Verify()
    kept, dropped = stage.apply(parsed)
    assert [r["source_id"] for r in kept] == ["q0", "q1"] and all(r["correct"] for r in kept)
    assert [(r["source_id"], r["correct"], r["drop_reason"]) for r in dropped] == [
        ("q2", False, "wrong answer"), ("q3", False, "no answer")]
    assert stage.stats.reasons == {"wrong answer": 1, "no answer": 1}


def test_verify_reads_full_gsm8k_solutions_and_symbolic_golds():
    gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    rows = [generated(COT, gold=gsm8k),
            generated("So $f(x) = \\boxed{1 + x^2}$.", gold="x^2+1", index=1),
            generated("The answer is $\\sqrt{8}$.", gold="2\\sqrt{2}", index=2),
            generated("The answer is $\\sqrt{8}$.", gold="2\\sqrt{3}", index=3)]
    parsed, _ = Parse().apply(rows)
    kept, dropped = Verify().apply(parsed)
    assert [r["source_id"] for r in kept] == ["q0", "q1", "q2"]
    assert [r["source_id"] for r in dropped] == ["q3"]


def test_verify_keeps_incorrect_rows_when_asked():
    parsed, _ = Parse().apply([generated(COT, gold="73")])
    kept, dropped = Verify(drop_incorrect=False).apply(parsed)
    assert not dropped and kept[0]["correct"] is False


@pytest.mark.parametrize("missing_gold, kept_rows", [("keep", 1), ("drop", 0)])
@pytest.mark.parametrize("gold", [None, "", "  "])
def test_verify_rows_without_gold(missing_gold, kept_rows, gold):
    parsed, _ = Parse().apply([generated(COT, gold=gold)])
    kept, dropped = Verify(missing_gold=missing_gold).apply(parsed)
    assert len(kept) == kept_rows and parsed[0]["correct"] is None
    assert [r["drop_reason"] for r in dropped] == ["no gold answer"] * (1 - kept_rows)


def test_verify_rejects_an_unknown_missing_gold_option():
    with pytest.raises(DistillError, match="missing_gold"):
        Verify(missing_gold="ignore")


@pytest.mark.parametrize("stage, column", [(Parse(), "kind"), (Verify(), "answer")])
def test_a_missing_column_names_the_stage_and_the_column(stage, column):
    row = generated(COT)
    del row["kind"]
    with pytest.raises(DistillError, match=f"stage '{stage.name}' needs the column '{column}'"):
        stage.apply([row])


def test_both_stages_from_a_config_and_their_columns_through_parquet(tmp_path):
    rows = [generated(COT), generated(COT.replace("#### 72", "#### 70"), index=1),
            generated(POT, gold="72", kind="pot", index=2)]
    parse, verify = build_stages([{"parse": {"allow_last_number": False}},
                                  {"verify": {"drop_incorrect": False}}])
    kept, _ = parse.apply(rows)
    kept, _ = verify.apply(kept)
    write_rows(tmp_path / "kept", kept, {"rows": len(kept)})
    back = io.read_rows(tmp_path / "kept")
    assert [(r["answer"], r["answer_span"], r["correct"]) for r in back] == [
        ("72", [len(COT) - 2, len(COT)], True), ("70", [len(COT) - 2, len(COT)], False),
        (None, None, False)]
    assert back[2]["code"].endswith("print(april + may)")
