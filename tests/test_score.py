import pytest

from distill.filters.score import Score, parse_score


@pytest.mark.parametrize("reply, score", [
    ("Clear and correct.\nScore: 9", 9.0), ("I'd give it 7/10.", 7.0),
    ("score=4.5", 4.5), ("Score: 3. On reflection, Score: 6", 6.0), ("Looks fine.", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def rows():
    return [{"id": str(i), "question": "What is 2 + 3?", "completion": f"2 + 3 = {5 + i}"}
            for i in range(3)]


def test_score_stage_asks_the_judge_and_applies_the_threshold(tiny_model):
    kept, dropped = Score(model=tiny_model, backend="hf", max_tokens=8).apply(rows())
    assert len(kept) == 3 and all("score" in r and r["score_reply"] is not None for r in kept)
    # the tiny random judge never writes a score: with a threshold, every row is dropped
    kept, dropped = Score(model=tiny_model, backend="hf", max_tokens=8, threshold=5).apply(rows())
    assert kept == [] and {r["drop_reason"] for r in dropped} == {"judge gave no score"}

