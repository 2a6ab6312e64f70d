"""The dedupe stage on real text: exact, MinHash near-duplicates and semantic paraphrases."""

import pytest

from distill.errors import DistillError
from distill.filters import dedupe
from distill.filters.dedupe import Dedupe
from distill.filters.stages import build_stages

PARAGRAPHS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
     "May. In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips in April "
     "and May. The answer is 72 because we add the clips from both months together and check "
     "that the half of 48 really is 24 before adding."),
    ("Weng earns 12 dollars an hour for babysitting. Yesterday she did 50 minutes of babysitting. "
     "Per minute she earns 12 / 60 = 0.2 dollars. For 50 minutes she earned 0.2 x 50 = 10 "
     "dollars. So the answer is 10 dollars, which is a little less than one full hour of pay."),
    ("Betty is saving money for a new wallet which costs 100 dollars. She has only half of the "
     "money she needs. Her parents give her 15 dollars and her grandparents twice as much. Betty "
     "has 100 / 2 = 50 dollars, the grandparents give 15 x 2 = 30, so she still needs "
     "100 - 50 - 30 - 15 = 5 dollars more."),
    ("To reverse a linked list in place, walk it once while keeping three pointers: the previous "
     "node, the current node and the next node. At each step point the current node back at the "
     "previous one, then advance all three. When the current pointer is empty the previous "
     "pointer is the new head of the list."),
]


def shingles(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return set(zip(*(words[i:] for i in range(n))))


def jaccard(a: str, b: str) -> float:
    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


def replace_words(text: str, positions: list[int]) -> str:
    words = text.split()
    for p in positions:
        words[p] = f"changed{p}"
    return " ".join(words)


def rows_of(texts: list[str], **extra) -> list[dict]:
    return [{"id": f"r{i}", "question": f"q{i}", "completion": t,
             **{k: v[i] for k, v in extra.items()}} for i, t in enumerate(texts)]


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_case_and_whitespace_variants_collapse(method):
    texts = ["Tom has 3 apples and buys 2 more, so he has 5.",
             "  tom HAS 3 apples and\n buys 2   more, so he has 5.  ",
             "Tom has 3 apples and buys 2 more, so he has 6.",
             "TOM HAS 3 APPLES AND BUYS 2 MORE, SO HE HAS 5."]
    stage = Dedupe(method=method)
    kept, dropped = stage.apply(rows_of(texts))
    assert ids(kept) == ["r0", "r2"]
    assert ids(dropped) == ["r1", "r3"]
    assert {r["duplicate_of"] for r in dropped} == {"r0"}
    reason = "duplicate (exact)" if method == "exact" else "near-duplicate (minhash)"
    assert {r["drop_reason"] for r in dropped} == {reason}
    assert all(r["dropped_by"] == "dedupe" for r in dropped)
    assert stage.report() == {"clusters": 1}
    assert stage.stats.to_dict()["reasons"] == {reason: 2}


def test_minhash_finds_planted_near_duplicates_and_keeps_different_texts():
    base = PARAGRAPHS[0]
    near = replace_words(base, [30])  # one word changed: 5 of 64 shingles broken
    far = replace_words(base, list(range(3, 60, 6)))  # ten words changed across the text
    assert jaccard(base, near) >= 0.8
    assert jaccard(base, far) < 0.5
    texts = [base, *PARAGRAPHS[1:], near, far]
    kept, dropped = Dedupe().apply(rows_of(texts))  # minhash, threshold 0.8
    assert ids(dropped) == ["r4"] and dropped[0]["duplicate_of"] == "r0"
    assert ids(kept) == ["r0", "r1", "r2", "r3", "r5"]


def test_minhash_threshold_follows_the_true_jaccard():
    base = PARAGRAPHS[1]
    variant = replace_words(base, [10, 40])
    j = jaccard(base, variant)
    assert 0.6 < j < 0.8
    assert len(Dedupe(threshold=j - 0.1).apply(rows_of([base, variant]))[0]) == 1
    assert len(Dedupe(threshold=min(j + 0.15, 1.0)).apply(rows_of([base, variant]))[0]) == 2


def test_clusters_are_connected_components_across_chunks(monkeypatch):
    monkeypatch.setattr(dedupe, "CHUNK_CHARS", 100)  # one text per chunk: one rensa matrix each
    a = PARAGRAPHS[2]
    b = replace_words(a, [5])
    c = replace_words(b, [60])
    stage = Dedupe()
    kept, dropped = stage.apply(rows_of([PARAGRAPHS[3], a, PARAGRAPHS[0], b, PARAGRAPHS[1], c]))
    assert ids(kept) == ["r0", "r1", "r2", "r4"]
    assert [r["duplicate_of"] for r in dropped] == ["r1", "r1"]
    assert stage.report() == {"clusters": 1}


def test_keep_column_picks_the_best_row():
    text = PARAGRAPHS[0]
    texts = [text, text.upper(), replace_words(text, [30]), text, PARAGRAPHS[1]]
    kept, dropped = Dedupe(keep="quality").apply(rows_of(texts, quality=[0.2, None, 0.9, 0.9, 0.1]))
    assert ids(kept) == ["r2", "r4"]  # 0.9 twice: the first of them wins
    assert {r["duplicate_of"] for r in dropped} == {"r2"}
    kept, _ = Dedupe(keep="quality").apply(rows_of(texts, quality=[None, float("nan"), None, 3, 5]))
    assert ids(kept) == ["r3", "r4"]
    kept, _ = Dedupe(keep="quality").apply(rows_of(texts, quality=[None] * 5))
    assert ids(kept) == ["r0", "r4"]


def test_keep_column_must_exist():
    with pytest.raises(DistillError, match="quality"):
        Dedupe(keep="quality").apply(rows_of(PARAGRAPHS))


@pytest.mark.parametrize("field, kept_ids", [("completion", ["r0", "r1"]),
                                          ("question", ["r0", "r2"]),
                                          ("both", ["r0", "r1", "r2"])])
def test_on_question_or_completion(field, kept_ids):
    rows = [{"id": "r0", "question": PARAGRAPHS[0], "completion": PARAGRAPHS[2]},
            {"id": "r1", "question": PARAGRAPHS[0], "completion": PARAGRAPHS[3]},
            {"id": "r2", "question": PARAGRAPHS[1], "completion": PARAGRAPHS[3]}]
    kept, _ = Dedupe(field=field).apply(rows)
    assert ids(kept) == kept_ids


def test_both_joins_question_and_completion():
    rows = [{"id": "a", "question": "What is 2 + 3?", "completion": "2 + 3 = 5. The answer is 5."},
            {"id": "b", "question": "what is 2 + 3?", "completion": "2 + 3 = 5.  The answer is 5."}]
    assert ids(Dedupe(field="both", method="exact").apply(rows)[0]) == ["a"]


def test_short_and_empty_texts():
    texts = ["", "", "Yes.", "yes.", "No.", "The answer is 4", "the answer is 4"]
    kept, dropped = Dedupe().apply(rows_of(texts))
    assert ids(kept) == ["r0", "r2", "r4", "r5"]
    assert [r["duplicate_of"] for r in dropped] == ["r0", "r2", "r5"]
    assert Dedupe().apply([]) == ([], [])


def test_built_from_a_pipeline_spec_and_bad_options():
    [stage] = build_stages([{"dedupe": {"method": "exact", "field": "question"}}])
    assert isinstance(stage, Dedupe) and stage.method == "exact"
    assert Dedupe().threshold == 0.8 and Dedupe(method="semantic").threshold == 0.95
    for options in ({"method": "fuzzy"}, {"field": "answer"}, {"threshold": 1.5}):
        with pytest.raises(DistillError):
            Dedupe(**options)


def test_semantic_catches_paraphrases_with_the_shipped_model():
    texts = ["How many apples does Tom have?",
             "What is the number of apples Tom has?",
             "How many oranges does Mary have?",
             "Write a Python function that reverses a linked list.",
             "The train leaves Paris at 9 am and arrives in Lyon at noon.",
             "Natalia sold clips to 48 of her friends in April.",
             "Natalia sold clips to forty-eight of her friends in April."]
    stage = Dedupe(method="semantic", threshold=0.9, batch_size=4)
    kept, dropped = stage.apply(rows_of(texts))
    assert ids(kept) == ["r0", "r2", "r3", "r4", "r5"]
    assert [(r["id"], r["duplicate_of"]) for r in dropped] == [("r1", "r0"), ("r6", "r5")]
    assert {r["drop_reason"] for r in dropped} == {"near-duplicate (semantic)"}
    assert stage.report() == {"clusters": 2}


def test_hashed_shingles_match_word_ngrams():
    texts = [PARAGRAPHS[0], replace_words(PARAGRAPHS[0], [3, 50]), PARAGRAPHS[0].upper(),
             "Tom has\t3 apples", "", "one", "a b c d e a b c d e", PARAGRAPHS[3],
             "Ünïcode\u00a0TEXT with\u3000wide  spaces é É", "ünïcode text with wide spaces é é"]
    flat, offsets = dedupe.shingles(texts, 5)
    hashed = [set(flat[offsets[i]:offsets[i + 1]].tolist()) for i in range(len(texts))]
    for i, a in enumerate(texts):
        want = shingles(a) or ({tuple(a.lower().split())} if a.split() else set())
        assert len(hashed[i]) == len(want)
        for j, b in enumerate(texts[:i]):
            theirs = shingles(b) or ({tuple(b.lower().split())} if b.split() else set())
            assert len(hashed[i] & hashed[j]) == len(want & theirs), (a, b)


def test_text_with_nul_keeps_rows_aligned():
    texts = ["alpha beta\0gamma delta epsilon zeta", "one two three four five six",
             "ALPHA BETA\0GAMMA DELTA EPSILON ZETA"]
    kept, dropped = Dedupe().apply(rows_of(texts))
    assert ids(kept) == ["r0", "r1"] and dropped[0]["duplicate_of"] == "r0"


def test_a_dense_cluster_of_variants_collapses_to_one_row():
    variants = [replace_words(PARAGRAPHS[2], [i % 60]) for i in range(300)]
    stage = Dedupe()
    kept, dropped = stage.apply(rows_of([*variants, *PARAGRAPHS]))
    assert ids(kept) == ["r0", "r300", "r301", "r303"]  # r302 is PARAGRAPHS[2] itself
    assert len(dropped) == 300 and stage.report() == {"clusters": 1}
