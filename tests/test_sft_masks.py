"""Span masks token by token (tiny tokenizer, SmolLM2's), and every fail-closed case."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from distill.errors import DistillError
from distill.sft.config import build_config
from distill.sft.data import ANSWER, PROMPT, REASONING, build_examples

QUESTION = "Maria buys 3 notebooks at $4 each and a pen for $2. How much does she spend?"
COMPLETION = "Let me think. 3 * 4 = 12 and 12 + 2 = 14.\n#### 14"


def row(completion=COMPLETION, span="end", **extra) -> dict:
    if span == "end":
        span = [completion.rindex("14"), len(completion)]
    return {"id": extra.pop("id", "r0"), "messages": [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": QUESTION}], "completion": completion, "answer_span": span,
        **extra}


def config(**kw):
    return build_config(output_dir="/tmp/unused", **kw)


@pytest.fixture(scope="module")
def smollm2():
    from distill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(None))


@pytest.fixture
def tiny(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def check_token_by_token(tokenizer, r: dict, ids, labels, spans, weights=(1.0, 2.0)):
    """Each token's span id, checked against the text it decodes to."""
    messages = r["messages"]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_ids = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": r["completion"]}], tokenize=True,
        return_dict=True)["input_ids"]
    prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                               return_dict=True)["input_ids"]
    assert list(ids) == list(full_ids)  # the very ids TRL builds for this row
    # TRL's completion mask (everything after the prompt) == our reasoning + answer
    assert [s > 0 for s in spans] == [i >= len(prompt_ids) for i in range(len(ids))]
    pieces = [tokenizer.decode([i]) for i in ids]
    text = {k: "".join(p for p, s in zip(pieces, spans) if s == k) for k in (0, 1, 2)}
    assert text[PROMPT] == prompt
    assert spans == sorted(spans)  # prompt, then reasoning, then answer and what follows it
    a, b = r["answer_span"]
    completion_and_end = text[REASONING] + text[ANSWER]
    assert completion_and_end.startswith(r["completion"])
    assert tokenizer.eos_token in completion_and_end[len(r["completion"]):]
    # the first answer token holds the answer's first character; no reasoning token does
    first = next(i for i, s in enumerate(spans) if s == ANSWER)
    assert len(text[REASONING]) <= a < len(text[REASONING]) + len(pieces[first])
    assert r["completion"][a:b] in text[ANSWER]
    w = {PROMPT: 0.0, REASONING: weights[0], ANSWER: weights[1]}
    assert labels == [i if w[s] > 0 else -100 for i, s in zip(ids, spans)]


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_masks_token_by_token(which, request):
    tokenizer = request.getfixturevalue(which)
    r = row()
    cols, report = build_examples([r], tokenizer, config(answer_weight=2.0), verbose=False)
    check_token_by_token(tokenizer, r, cols["input_ids"][0], cols["labels"][0],
                         cols["span_ids"][0])
    assert report.examples == 1 and report.dropped_rows == 0 and report.no_end_of_turn == 0


def test_smollm2_answer_tokens_literally(smollm2):
    cols, _ = build_examples([row()], smollm2, config(answer_weight=2.0), verbose=False)
    tagged = [(smollm2.decode([i]), s) for i, s in zip(cols["input_ids"][0],
                                                      cols["span_ids"][0]) if s > 0]
    assert tagged[-7:] == [("\n", 1), ("####", 1), (" ", 1), ("1", 2), ("4", 2),
                           ("<|im_end|>", 2), ("\n", 2)]
    assert tagged[:4] == [("Let", 1), (" me", 1), (" think", 1), (".", 1)]
    # SmolLM2's template adds its default system prompt only without a system message
    assert "SmolLM" not in smollm2.decode(cols["input_ids"][0])


def test_zero_reasoning_weight_counts_only_the_answer(tiny):
    r = row()
    cols, _ = build_examples([r], tiny, config(reasoning_weight=0.0), verbose=False)
    check_token_by_token(tiny, r, cols["input_ids"][0], cols["labels"][0], cols["span_ids"][0],
                         weights=(0.0, 1.0))
    assert all(lab == -100 for lab, s in zip(cols["labels"][0], cols["span_ids"][0]) if s < 2)


def test_no_span_needed_when_weights_equal(tiny):
    cols, report = build_examples([row(span=None)], tiny, config(), verbose=False)
    assert report.no_span == 1 and set(cols["span_ids"][0]) == {PROMPT, REASONING}


def test_step_by_step_builds_label_and_rationale(smollm2):
    r = row(reasoning="Let me think. 3 * 4 = 12 and 12 + 2 = 14.")
    cols, report = build_examples([r], smollm2, config(objective="step_by_step"), verbose=False)
    assert report.examples == 2
    label, rationale = (smollm2.decode(ids) for ids in cols["input_ids"])
    assert "[label] Maria buys" in label and label.endswith("assistant\n14<|im_end|>\n")
    assert "[rationale] Maria" in rationale
    assert rationale.endswith("assistant\nLet me think. 3 * 4 = 12 and 12 + 2 = 14.<|im_end|>\n")
    assert set(cols["span_ids"][0]) == {PROMPT, ANSWER}  # the label target is all answer
    assert set(cols["span_ids"][1]) == {PROMPT, REASONING}  # the rationale all reasoning


def test_drop_few_shot_trains_on_the_zero_shot_prompt(tiny):
    from distill.datagen.prompts import load_prompt

    pf = load_prompt("gsm8k-cot-8shot")
    eight = {**row(), "messages": pf.render({"question": QUESTION})}
    zero = {**row(), "messages": pf.with_shots(0).render({"question": QUESTION})}

    def ids(r, **kw):
        return build_examples([r], tiny, config(**kw), verbose=False)[0]["input_ids"][0]

    assert ids(eight, drop_few_shot=True) == ids(zero)
    assert len(ids(eight, max_length=8192)) > 3 * len(ids(zero))


# fail closed ---------------------------------------------------------------------------

def test_truncated_before_answer_is_dropped_with_numbers(tiny, capsys):
    rows = [row(id="long", completion="blah " * 200 + "#### 14"), row(id="ok")] + [
        row(id=f"ok{i}") for i in range(18)]
    _cols, report = build_examples(rows, tiny, config(max_length=100), verbose=True)
    assert report.examples == 19 and report.dropped_rows == 1
    err = capsys.readouterr().err
    assert "1 rows are cut by max_length=100 before the end of their answer (e.g. long)" in err
    with pytest.raises(DistillError, match=r"1 of 20 rows are truncated by max_length=100"):
        build_examples(rows, tiny, config(max_length=100, on_truncated="error"), verbose=False)


def test_truncated_after_the_answer_is_kept_and_counted(tiny):
    r = row(completion="#### 14\n" + "blah " * 100, span=[5, 7])
    cols, report = build_examples([r], tiny, config(max_length=90), verbose=False)
    assert report.tail_truncated == 1 and len(cols["input_ids"][0]) == 90
    assert report.no_end_of_turn == 1  # said out loud: the cut sequence never trains the stop


def test_too_many_dropped_stops(tiny):
    rows = [row(id="long", completion="blah " * 200 + "#### 14"), row(id="ok")]
    with pytest.raises(DistillError, match=r"1 of 2 rows \(50%\) would be dropped"):
        build_examples(rows, tiny, config(max_length=100), verbose=False)


def test_missing_span_when_needed_stops(tiny):
    rows = [row(id="a", span=None), row(id="b")]
    with pytest.raises(DistillError, match=r"1 of 2 rows cannot be trained as asked: 1 rows have "
                       r"no answer_span \(needed.*e\.g\. a"):
        build_examples(rows, tiny, config(answer_weight=3.0), verbose=False)
    _cols, report = build_examples(rows, tiny, config(answer_weight=3.0, on_bad_row="drop",
                                                     max_dropped_fraction=0.5), verbose=False)
    assert report.examples == 1 and report.dropped == {
        "have no answer_span (needed: answer and reasoning are weighted apart)": 1}


@pytest.mark.parametrize("span,reason", [([40, 999], "outside their completion"),
                                         ([5, 5], "outside their completion"),
                                         (["x", 2], "outside their completion")])
def test_unmappable_span_stops(tiny, span, reason):
    with pytest.raises(DistillError, match=reason):
        build_examples([row(span=span)], tiny, config(answer_weight=2.0), verbose=False)


def test_all_zero_mask_stops(tiny):
    r = row(completion="14", span=[0, 2])  # all answer, and the answer weighs 0
    with pytest.raises(DistillError, match="1 rows have an all-zero loss mask"):
        build_examples([r], tiny, config(answer_weight=0.0), verbose=False)


def test_empty_completion_and_bad_messages_stop(tiny):
    with pytest.raises(DistillError, match="have an empty completion"):
        build_examples([row(completion="  ", span=None)], tiny, config(), verbose=False)
    bad = row()
    bad["messages"] = "What is 2+2?"
    with pytest.raises(DistillError, match="have no messages"):
        build_examples([bad], tiny, config(), verbose=False)


def test_template_that_rewrites_the_completion_stops(tiny):
    tiny.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                          "{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(DistillError, match="does not render verbatim"):
        build_examples([row()], tiny, config(), verbose=False)


def test_template_that_trims_content_still_maps_the_answer(tiny):
    tiny.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                          "{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    r = row(completion="  " + COMPLETION + "\n", span=[len(COMPLETION), len(COMPLETION) + 2])
    cols, _ = build_examples([r], tiny, config(answer_weight=2.0), verbose=False)
    answer = [i for i, s in zip(cols["input_ids"][0], cols["span_ids"][0]) if s == ANSWER]
    assert tiny.decode(answer).strip() == "14<|im_end|>"


def test_tokenizer_without_pad_token_gets_one_out_loud(tiny, capsys):
    from distill.sft.train import check_pad_token

    tiny.pad_token = None
    check_pad_token(tiny)
    assert tiny.pad_token is not None
    assert "the tokenizer has no pad token; padding with" in capsys.readouterr().err


def test_slow_tokenizer_is_refused(tiny):
    class Slow:
        is_fast = False
        chat_template = "x"

    with pytest.raises(DistillError, match="fast tokenizer"):
        build_examples([row()], Slow(), config(), verbose=False)


def test_answer_merged_into_a_prompt_token_stops(tiny):
    """A generation prompt ending in a space: BPE merges it with the answer (' 14'), so the
    answer's first characters would silently count as prompt."""
    tiny.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}#### "
                          "{{ m['content'] }}<|im_end|>{% else %}{{ m['content'] }}\n{% endif %}"
                          "{% endfor %}{% if add_generation_prompt %}#### {% endif %}")
    assert " 14" in tiny.convert_ids_to_tokens(tiny(" 14")["input_ids"])[0].replace("Ġ", " ")
    with pytest.raises(DistillError, match="1 rows have an answer that starts inside a prompt "
                       "token"):
        build_examples([row(completion="14", span=[0, 2])], tiny, config(answer_weight=2.0),
                       verbose=False)
