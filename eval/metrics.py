"""Scoring and statistics: one completion against its gold answer, pass@k, maj@k, confidence
intervals, and teacher-vs-student retention and agreement.

Answers are found and compared by ``distill.answers`` (the checker the filters use), so every
model, run and stage is judged by the same rules.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np

from distill.answers import extract_code, extract_gold, is_correct, normalize_number
from distill.tools import final_answer

MAJ_EXACT_SUBSETS = 5000  # maj@k enumerates every k-subset up to this many, else samples
BOOTSTRAP_SAMPLES = 10_000


def score_completion(completion: str | None, gold, kind: str = "cot") -> dict:
    """``answer`` (normalized, or None), ``answer_format``, ``format_ok`` (an answer stated
    the way the prompt asks: a last number alone is no answer) and ``correct`` (None without a
    gold answer) of one chain-of-thought completion. Program-of-thought completions get ``code``
    here; their answer comes from running it (``distill.eval.run.execute_programs``)."""
    text = completion or ""
    gold_answer = extract_gold(gold)
    if kind == "pot":
        found = extract_code(text)
        return {"answer": None, "answer_format": None, "format_ok": False,
                "code": found[0] if found else None,
                "correct": None if gold_answer is None else False}
    found = final_answer(text)  # after a tool-integrated trace's last output block
    answer = found.answer if found else None
    return {"answer": answer, "answer_format": found.format if found else None,
            "format_ok": found is not None, "code": None,
            "correct": None if gold_answer is None else
            (answer is not None and is_correct(answer, gold_answer))}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): the chance that at least one of k samples drawn
    without replacement from n samples, c of them correct, is correct:
    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_correct(answers: list, gold) -> float:
    """Credit of a majority vote over ``answers`` (None does not vote): 1 when the gold
    answer wins alone, 1/t when it ties t ways for the most votes (a random tie-break's
    expected value), else 0. Answers vote by value: "7.0" and "7" are one answer."""
    counts = Counter(normalize_number(a) or a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    winners = [a for a, v in counts.items() if v == top]
    hits = sum(1 for a in winners if is_correct(a, gold))
    return hits / len(winners)


def maj_at_k(answers: list, gold, k: int, seed: int = 0) -> float:
    """maj@k of one problem from n >= k sampled answers: the majority-vote credit averaged
    over every k-subset of the n samples (over 1000 random ones when there are more than
    ``MAJ_EXACT_SUBSETS``), so it does not depend on the order the samples came in."""
    n = len(answers)
    if k < 1 or k > n:
        raise ValueError(f"maj@{k} needs 1 <= k <= n, got n={n}")
    if k == n:
        return majority_correct(answers, gold)
    if math.comb(n, k) <= MAJ_EXACT_SUBSETS:
        subsets = itertools.combinations(range(n), k)
    else:
        rng = random.Random(seed)
        subsets = (rng.sample(range(n), k) for _ in range(1000))
    credits = [majority_correct([answers[i] for i in s], gold) for s in subsets]
    return sum(credits) / len(credits)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [k for k in (2 ** i for i in range(n.bit_length())) if k <= n]
    return sorted(set(ks) | {n})


def wilson_interval(successes: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sane at 0 and 1 and for small n)."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def retention(student: list[float], teacher: list[float], samples: int = BOOTSTRAP_SAMPLES,
              seed: int = 0, level: float = 0.95) -> dict:
    """Retention = student accuracy / teacher accuracy on the same items (paired lists of 0/1
    or credits), with a paired percentile bootstrap interval: items are resampled with
    replacement and both runs keep their pairing. Also the accuracy difference and its
    interval. Resamples where the teacher scores 0 are left out of the ratio's interval."""
    s, t = np.asarray(student, dtype=float), np.asarray(teacher, dtype=float)
    if s.shape != t.shape or s.ndim != 1 or len(s) == 0:
        raise ValueError("retention needs two equally long, non-empty lists of item scores")
    idx = np.random.default_rng(seed).integers(0, len(s), size=(samples, len(s)))
    s_means, t_means = s[idx].mean(axis=1), t[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(t_means > 0, s_means / t_means, np.nan)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    ratio = s.mean() / t.mean() if t.mean() > 0 else None
    finite = ratios[np.isfinite(ratios)]
    diff = s_means - t_means
    return {
        "retention": None if ratio is None else float(ratio),
        "retention_ci": None if ratio is None or not len(finite) else
        [float(np.percentile(finite, lo_q)), float(np.percentile(finite, hi_q))],
        "difference": float(s.mean() - t.mean()),
        "difference_ci": [float(np.percentile(diff, lo_q)), float(np.percentile(diff, hi_q))],
        "method": f"paired percentile bootstrap, {samples} resamples of {len(s)} items, "
                  f"seed {seed}, {level:.0%} interval",
    }


def agreement(student_answers: list, teacher_answers: list) -> float:
    """Share of items where both runs gave the same final answer (no answer never agrees)."""
    if len(student_answers) != len(teacher_answers) or not student_answers:
        raise ValueError("agreement needs two equally long, non-empty lists of answers")
    same = sum(1 for a, b in zip(student_answers, teacher_answers)
               if a is not None and b is not None and is_correct(a, b))
    return same / len(student_answers)
