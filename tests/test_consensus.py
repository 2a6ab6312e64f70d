"""consensus: problems without gold are labelled by their samples' answers, parsed from real
completions (and, for PoT, printed by programs run in the real sandbox), then verify keeps the
rows that reach the label."""

import json

import pytest

from distill import io
from distill.errors import DistillError
from distill.filters.pipeline import filter_rows, run_filter
from distill.filters.stages import build_stages

QUESTION = "Lena has 7 pears and buys 4 more. She gives 2 to her brother. How many pears now?"


def sample(problem, k, completion, kind="cot", gold=None):
    return {"id": f"{problem}-{kind}-{k}", "source_id": problem, "sample_index": k,
            "question": f"{QUESTION} ({problem})", "gold": gold, "kind": kind,
            "completion": completion, "finish_reason": "stop"}


def cot(problem, *answers, gold=None):
    return [sample(problem, k, f"She has 7 + 4 = 11, then gives 2 away ({k}).\n#### {a}" if a
                   else "She has some pears left.", gold=gold)
            for k, a in enumerate(answers)]


def pot(problem, *printed):
    return [sample(problem, k, f"```python\npears = 7 + 4\nprint({p})\n```", kind="pot")
            for k, p in enumerate(printed)]


def run(rows, **options):
    stages = build_stages(["parse", {"execute": {"timeout": 5, "progress": False}},
                           {"consensus": options}, "verify"])
    result = filter_rows(rows, stages)
    kept = {r["id"]: r for r in result.kept}
    dropped = {r["id"]: (r["dropped_by"], r["drop_reason"]) for r in result.dropped}
    return kept, dropped, stages[2]


def test_majority_becomes_gold_and_verify_keeps_the_rows_that_reach_it():
    kept, dropped, stage = run(cot("a", "9", "9", "$9.00", "11"))
    assert sorted(kept) == ["a-cot-0", "a-cot-1", "a-cot-2"]
    row = kept["a-cot-0"]
    assert (row["gold"], row["gold_from"], row["consensus_votes"], row["consensus_share"]) == \
        ("9", "consensus", 3, 0.75)
    assert row["correct"] is True
    assert dropped == {"a-cot-3": ("verify", "wrong answer")}
    assert stage.report() == {"problems": {"labelled": 1}}


def test_tie_too_few_votes_and_low_share_drop_the_whole_problem():
    rows = cot("tie", "3", "4") + cot("one", "5") + cot("spread", "1", "1", "2", "3", "4", "6")
    kept, dropped, stage = run(rows)
    assert kept == {}
    assert {dropped[f"tie-cot-{k}"] for k in range(2)} == {("consensus", "tied answers")}
    assert dropped["one-cot-0"] == ("consensus", "too few votes (< 2)")
    assert {dropped[f"spread-cot-{k}"] for k in range(6)} == \
        {("consensus", "consensus share below 0.5")}
    assert stage.report() == {"problems": {"no consensus": 3}}
    kept, _, _ = run(cot("one", "5"), min_votes=1)
    assert kept["one-cot-0"]["gold"] == "5"


def test_ambiguous_answers_cast_no_vote():
    rows = cot("amb", "12 or 13", "12 or 13", "12 or 13", "12")
    _, dropped, _ = run(rows)
    assert set(dropped.values()) == {("consensus", "too few votes (< 2)")}
    rows = cot("amb", "12 or 13", "12 or 13", "12", "12")
    kept, dropped, _ = run(rows)
    assert sorted(kept) == ["amb-cot-2", "amb-cot-3"] and kept["amb-cot-2"]["gold"] == "12"
    assert kept["amb-cot-2"]["consensus_share"] == 1.0  # of the clear answers
    assert dropped["amb-cot-0"] == ("verify", "ambiguous answer")


def test_cot_and_executed_pot_must_agree_when_both_kinds_are_required():
    agree = cot("both", "9", "9") + pot("both", "pears - 2")      # the program prints 9
    differ = cot("split", "9", "9") + pot("split", "pears + 2")   # the program prints 13
    only_cot = cot("cot-only", "9", "9")
    kept, dropped, stage = run(agree + differ + only_cot, kinds=["cot", "pot"])
    assert sorted(kept) == ["both-cot-0", "both-cot-1", "both-pot-0"]
    assert kept["both-pot-0"]["exec"]["stdout"].strip() == "9"
    assert kept["both-pot-0"]["gold"] == "9" and kept["both-pot-0"]["correct"] is True
    assert {dropped[f"split-{k}"] for k in ("cot-0", "cot-1", "pot-0")} == \
        {("consensus", "not reached by pot")}
    assert dropped["cot-only-cot-0"] == ("consensus", "not reached by pot")
    assert stage.report() == {"problems": {"labelled": 1, "no consensus": 2}}
    kept, _, _ = run(differ)  # without kinds: 2 of 3 is a consensus, the program is wrong
    assert sorted(kept) == ["split-cot-0", "split-cot-1"]


def test_a_problem_with_gold_keeps_it():
    kept, dropped, stage = run(cot("known", "9", "10", gold="10"))
    assert sorted(kept) == ["known-cot-1"] and kept["known-cot-1"]["gold_from"] == "source"
    assert dropped == {"known-cot-0": ("verify", "wrong answer")}
    assert stage.report() == {"problems": {"gold given": 1}}


@pytest.mark.parametrize("options, message", [
    ({"min_votes": 0}, "min_votes"), ({"min_share": 1.5}, "min_share"),
    ({"kinds": "cot"}, "kinds")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(DistillError, match=message):
        build_stages([{"consensus": options}])


def test_consensus_preset_labels_cot_and_pot_samples_read_together(tmp_path):
    for kind, rows in (("cot", cot("a", "9", "9", "11") + cot("b", "3", "4")),
                       ("pot", pot("a", "pears - 2"))):
        (tmp_path / f"samples-{kind}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    result = run_filter(str(tmp_path / "samples-*.jsonl"), tmp_path / "out", config="consensus")
    kept = io.read_rows(tmp_path / "out" / "kept")
    assert sorted(r["id"] for r in kept) == ["a-cot-0", "a-cot-1", "a-pot-0"]
    assert {(r["gold"], r["gold_from"]) for r in kept} == {("9", "consensus")}
    stages = {s["stage"]: s for s in result.stages}
    assert stages["consensus"]["reasons"] == {"tied answers": 2}
    assert stages["verify"]["reasons"] == {"wrong answer": 1}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "consensus" in json.dumps(report)
