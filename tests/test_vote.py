"""vote, pass_rate and agreement on planted samples of real GSM8K problems."""

import pytest

from distill.errors import DistillError
from distill.filters.stages import build_stages
from distill.filters.vote import Agreement, PassRate, Vote
from distill.tasks import load_task

PROBLEMS = load_task("gsm8k", "test", hub=False)[:6]


def samples(p, answers, kind="cot", correct=None, source_id=None):
    """One row per answer for problem index ``p``, as generate + parse + verify leave them."""
    prob = PROBLEMS[p]
    out = []
    for k, a in enumerate(answers):
        out.append({"id": f"{kind}-{p}-{k}", "source_id": source_id or prob["id"],
                    "sample_index": k, "question": prob["question"], "gold": prob["answer"],
                    "kind": kind, "completion": f"... The answer is {a}.", "answer": a,
                    "correct": (a == prob["answer"]) if correct is None else correct[k]})
    return out


def ids(rows):
    return sorted(r["id"] for r in rows)


def test_vote_majority_kept():
    rows = (samples(0, ["18", "18", "18", "17", None])  # clear majority 18 (3 of 4)
            + samples(1, ["3", "4"])                     # tie
            + samples(2, ["70000"])                      # a single vote
            + samples(3, ["1", "1", "2", "3", "4", "5"]))  # plurality of 2/6 < 0.5
    stage = Vote()
    kept, dropped = stage.apply(rows)
    assert ids(kept) == ["cot-0-0", "cot-0-1", "cot-0-2"]
    reasons = {r["id"]: r["drop_reason"] for r in dropped}
    assert reasons["cot-0-3"] == "disagrees with majority"
    assert reasons["cot-0-4"] == "no answer"
    assert {reasons[f"cot-1-{k}"] for k in range(2)} == {"no clear majority"}
    assert reasons["cot-2-0"] == "no clear majority"
    assert {reasons[f"cot-3-{k}"] for k in range(6)} == {"no clear majority"}
    r = kept[0]
    assert (r["votes"], r["majority"], r["vote_share"]) == (3, "18", 0.75)
    loser = next(d for d in dropped if d["id"] == "cot-0-3")
    assert (loser["votes"], loser["majority"], loser["vote_share"]) == (1, "18", 0.25)
    assert stage.report() == {"problems": {"with majority": 1, "no clear majority": 3}}


def test_vote_options():
    rows = samples(2, ["70000"]) + samples(3, ["1", "1", "2", "3", "4", "5"])
    kept, _ = Vote(min_votes=1, min_share=0.3).apply(rows)
    assert ids(kept) == ["cot-2-0", "cot-3-0", "cot-3-1"]
    with pytest.raises(DistillError, match="min_share"):
        Vote(min_share=2)


def test_vote_groups_by_source_id_and_task():
    a = samples(0, ["18", "18"])
    b = [{**r, "id": r["id"] + "-t", "task": "explain", "answer": "5"} for r in a]
    kept, dropped = Vote().apply(a + b)
    assert len(kept) == 4 and not dropped


def test_pass_rate_bounds():
    rows = (samples(0, ["18"] * 4)                               # 1.00: too easy
            + samples(1, ["1"] * 4)                              # 0.00: too hard
            + samples(2, ["70000", "1", "70000", "2"])           # 0.50: kept
            + samples(3, ["x"] * 10, correct=[True] + [False] * 9)   # 0.10: kept (inclusive)
            + samples(4, ["x"] * 10, correct=[True] * 9 + [False])   # 0.90: kept (inclusive)
            + samples(5, ["x"] * 3, correct=[None] * 3))              # no gold: kept
    stage = PassRate()
    kept, dropped = stage.apply(rows)
    reasons = {r["drop_reason"] for r in dropped}
    assert reasons == {"too easy (pass rate > 0.9)", "too hard (pass rate < 0.1)"}
    assert len(dropped) == 8
    assert {r["source_id"] for r in kept} == {PROBLEMS[i]["id"] for i in (2, 3, 4, 5)}
    by_problem = {r["source_id"]: r["pass_rate"] for r in kept}
    assert by_problem[PROBLEMS[2]["id"]] == 0.5 and by_problem[PROBLEMS[5]["id"]] is None
    # incorrect rows of a kept problem stay (a later verify stage drops them)
    assert sum(not r["correct"] for r in kept if r["source_id"] == PROBLEMS[2]["id"]) == 2
    rep = stage.report()
    assert rep["problems"] == {"too easy": 1, "too hard": 1, "kept": 3, "no gold": 1}

    kept, _ = PassRate(lo=0.0, hi=1.0).apply(rows)
    assert len(kept) == len(rows)
    with pytest.raises(DistillError, match="lo"):
        PassRate(lo=0.8, hi=0.2)


def test_pass_rate_warns_when_only_correct_rows_arrive():
    stage = PassRate()
    stage.apply(samples(0, ["18", "18"]) + samples(1, ["3"]))
    assert "note" in stage.report()


def test_cot_pot_agreement():
    rows = (samples(0, ["18", "17"], kind="cot") + samples(0, ["18", None], kind="pot")
            + samples(1, ["3"], kind="cot")                         # CoT only: passes
            + samples(2, ["70000"], kind="cot") + samples(2, ["75000"], kind="pot")
            + samples(3, ["540"], kind="pot", source_id="other-file-7")
            + samples(3, ["540", "541"], kind="cot"))               # source ids differ
    stage = Agreement()
    kept, dropped = stage.apply(rows)
    assert ids(kept) == ["cot-0-0", "cot-1-0", "cot-3-0", "pot-0-0", "pot-3-0"]
    reasons = {r["id"]: r["drop_reason"] for r in dropped}
    assert reasons == {"cot-0-1": "CoT and PoT disagree", "pot-0-1": "no answer",
                       "cot-2-0": "CoT and PoT disagree", "pot-2-0": "CoT and PoT disagree",
                       "cot-3-1": "CoT and PoT disagree"}
    agree = {r["id"]: r["agreement"] for r in kept}
    assert agree == {"cot-0-0": 1, "cot-1-0": None, "cot-3-0": 1, "pot-0-0": 1, "pot-3-0": 1}
    assert stage.report() == {"problems": {"both kinds": 3, "one kind": 1}}


def test_registry_and_dropped_by():
    vote, pass_rate, agreement = build_stages(["vote", {"pass_rate": {"lo": 0.1, "hi": 0.9}},
                                               "agreement"])
    assert (type(vote), type(pass_rate), type(agreement)) == (Vote, PassRate, Agreement)
    _, dropped = vote.apply(samples(0, ["18", "18", "17"]))
    assert dropped[0]["dropped_by"] == "vote"
    with pytest.raises(DistillError, match="needs the column 'correct'"):
        pass_rate.apply([{"id": "x", "source_id": "s"}])


def test_agreement_compares_answers_by_value():
    """With distill.answers present, "0.5" (CoT) and "1/2" (PoT) are the same answer."""
    pytest.importorskip("distill.answers")
    rows = samples(0, ["0.5", "2"], kind="cot") + samples(0, ["1/2"], kind="pot")
    kept, dropped = Agreement().apply(rows)
    assert ids(kept) == ["cot-0-0", "pot-0-0"]
    assert [r["id"] for r in dropped] == ["cot-0-1"]


def test_ambiguous_answers_never_win_a_vote_or_agree():
    """Three identical "12 or 13" are no majority for 12 (nor for 13): the checker reads them
    as ambiguous, so they are dropped as such and the clear answers vote alone."""
    rows = samples(0, ["12 or 13", "12 or 13", "12 or 13", "18", "18"])
    kept, dropped = Vote().apply(rows)
    assert ids(kept) == ["cot-0-3", "cot-0-4"] and kept[0]["vote_share"] == 1.0
    assert {r["drop_reason"] for r in dropped} == {"ambiguous answer"}
    rows = samples(1, ["about 3"], kind="cot") + samples(1, ["about 3", "3"], kind="pot")
    kept, dropped = Agreement().apply(rows)
    assert {r["id"]: r["drop_reason"] for r in dropped} == {
        "cot-1-0": "ambiguous answer", "pot-1-0": "ambiguous answer",
        "pot-1-1": "CoT and PoT disagree"}
