"""Scoring and statistics of distill.eval: a fixed table of outputs, pass@k against its closed
form, maj@k on planted samples, retention intervals."""

import itertools
from math import comb

import pytest

from distill.eval import metrics as M
from distill.eval.compare import pareto_front

# completion, gold, expected answer, format_ok, correct
TABLE = [
    ("3 + 4 = 7.\n#### 7", "7", "7", True, True),
    ("She pays 2 * 9 = $18.\n#### $18", "#### 18", "18", True, True),
    ("The answer is 1,000 apples.", "1000", "1000", True, True),
    ("So the final answer is \\boxed{\\frac{3}{4}}", "0.75", "0.75", True, True),
    ("Step 1: 5 - 2 = 3. Step 2: 3 * 2 = 6", "6", None, False, False),  # a last number alone
    ("#### 6 or 7", "6", "6 or 7", True, False),  # an ambiguous answer is never correct
    ("The answer is 1e3.", "1000", "1000", True, True),
    ("#### 12", "13", "12", True, False),
    ("I do not know.", "5", None, False, False),
    ("", "5", None, False, False),
    ("Answer: 2.50", "2.5", "2.5", True, True),
    ("The answer is 7", None, "7", True, None),  # no gold: correct is None
]


@pytest.mark.parametrize("completion,gold,answer,format_ok,correct", TABLE)
def test_scorer_on_fixed_outputs(completion, gold, answer, format_ok, correct):
    s = M.score_completion(completion, gold)
    assert (s["answer"], s["format_ok"], s["correct"]) == (answer, format_ok, correct)


def test_scorer_pot_only_finds_the_program():
    s = M.score_completion("Here:\n```python\nx = 3\nprint(x * 2)\n```", "6", "pot")
    assert s["code"] == "x = 3\nprint(x * 2)" and s["answer"] is None
    assert M.score_completion("no code here", "6", "pot")["code"] is None


def test_pass_at_k_matches_its_closed_form():
    n, c = 5, 2
    for k in range(1, 6):
        expected = 1 - comb(n - c, k) / comb(n, k)
        assert M.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    # by enumeration: the share of k-subsets holding a correct sample
    samples = [1, 1, 0, 0, 0]
    for k in range(1, 6):
        subsets = list(itertools.combinations(samples, k))
        assert M.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert [round(M.pass_at_k(5, 2, k), 6) for k in range(1, 6)] == [0.4, 0.7, 0.9, 1.0, 1.0]


def test_pass_at_k_edge_cases():
    assert M.pass_at_k(10, 0, 1) == 0.0 and M.pass_at_k(10, 0, 10) == 0.0
    assert M.pass_at_k(10, 10, 1) == 1.0
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the sample accuracy
    assert M.pass_at_k(1, 1, 1) == 1.0 and M.pass_at_k(1, 0, 1) == 0.0
    assert M.pass_at_k(200, 1, 200) == 1.0
    assert 0 < M.pass_at_k(1000, 1, 3) < 0.0031  # no overflow for large n
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            M.pass_at_k(*bad)


def test_maj_at_k_on_planted_samples():
    answers = ["7", "7", "7", "3", "3"]
    assert M.maj_at_k(answers, "7", 5) == 1.0
    assert M.maj_at_k(answers, "3", 5) == 0.0
    # k=1: each sample alone -> the share of correct samples
    assert M.maj_at_k(answers, "7", 1) == pytest.approx(3 / 5)
    # k=2 over the 10 pairs: {7,7} x3 -> 1, {7,3} x6 -> tie -> 1/2, {3,3} x1 -> 0
    assert M.maj_at_k(answers, "7", 2) == pytest.approx((3 + 6 * 0.5) / 10)
    # exact-value voting: "7.0" and "7" are the same answer for the checker
    assert M.majority_correct(["7", "7.0", "3"], "7") == 1.0
    assert M.majority_correct(["3", None, None], "7") == 0.0
    assert M.majority_correct([None, None], "7") == 0.0
    assert M.majority_correct(["7", "3"], "7") == 0.5  # two-way tie
    with pytest.raises(ValueError):
        M.maj_at_k(answers, "7", 6)


def test_maj_at_k_large_n_samples_subsets_reproducibly():
    answers = ["1"] * 20 + ["2"] * 10
    a, b = M.maj_at_k(answers, "1", 15), M.maj_at_k(answers, "1", 15)
    assert a == b and 0.8 < a <= 1.0


def test_default_ks():
    assert M.default_ks(1) == [1]
    assert M.default_ks(8) == [1, 2, 4, 8]
    assert M.default_ks(10) == [1, 2, 4, 8, 10]


def test_wilson_interval():
    lo, hi = M.wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = M.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_retention_ci_sanity():
    # identical runs: retention 1, and every paired resample gives exactly 1
    same = [1, 0, 1, 1, 0, 1, 0, 1] * 10
    r = M.retention(same, same)
    assert r["retention"] == 1.0 and r["retention_ci"] == [1.0, 1.0]
    assert r["difference"] == 0.0 and r["difference_ci"] == [0.0, 0.0]
    assert "paired percentile bootstrap" in r["method"]
    # a student right on half the items the teacher gets right
    teacher = [1] * 80 + [0] * 20
    student = [1] * 40 + [0] * 60
    r = M.retention(student, teacher, samples=4000)
    assert r["retention"] == pytest.approx(0.5)
    lo, hi = r["retention_ci"]
    assert lo < 0.5 < hi and 0.35 < lo and hi < 0.65
    assert r["difference_ci"][0] < -0.4 < r["difference_ci"][1] < 0
    # more items, narrower interval
    wide = M.retention(student[::4] + student[1::4], teacher[::4] + teacher[1::4], samples=4000)
    assert wide["retention_ci"][1] - wide["retention_ci"][0] > hi - lo
    # a teacher with no correct item: no ratio
    assert M.retention([1, 0], [0, 0])["retention"] is None
    with pytest.raises(ValueError):
        M.retention([1], [1, 0])


def test_agreement_and_pareto():
    assert M.agreement(["7", "3", None, "2.0"], ["7", "4", None, "2"]) == 0.5
    front = pareto_front([("big", 1000, 0.8), ("small", 10, 0.5), ("mid", 100, 0.4),
                          ("tie", 10, 0.5), ("unknown", None, 0.9)])
    assert set(front) == {"big", "small", "tie"}
