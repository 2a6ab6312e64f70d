"""The weighted losses against hand-computed references; packing keeps documents apart."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from distill.sft.config import build_config
from distill.sft.data import build_examples
from distill.sft.spans import token_scale, weight_table
from distill.sft.trainer import DistillSFTTrainer, SpanCollator

COMPLETIONS = ["Let me think. 3 * 4 = 12 and 12 + 2 = 14.\n#### 14",
               "The answer is 42. #### 42",
               "Let me think. 5 + 5 = 10.\n#### 10"]


def rows():
    out = []
    for i, c in enumerate(COMPLETIONS):
        answer = c.rsplit(" ", 1)[1]
        out.append({"id": f"r{i}", "messages": [{"role": "user", "content": f"Problem {i}: solve."}],
                    "completion": c, "answer_span": [len(c) - len(answer), len(c)]})
    return out


def make_trainer(tiny_model, tmp_path, **kw):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = build_config(output_dir=str(tmp_path / "out"), report_to="none",
                          gradient_checkpointing=False, disable_tqdm=True, **kw)
    cols, _ = build_examples(rows(), tokenizer, config, verbose=False)
    return DistillSFTTrainer(model=tiny_model, args=config, train_dataset=Dataset.from_dict(cols),
                             processing_class=tokenizer), cols


def reference(model, batch, weights, normalization) -> float:
    """The loss by hand: token by token log-softmax, weighted, normalized."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.double()
    sums, counts = {1: 0.0, 2: 0.0}, {1: 0, 2: 0}
    for b in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            label = int(batch["labels"][b, t])
            if label == -100:
                continue
            row = logits[b, t - 1].tolist()
            top = max(row)
            logz = top + math.log(sum(math.exp(x - top) for x in row))
            span = int(batch["span_ids"][b, t])
            sums[span] += logz - row[label]
            counts[span] += 1
    if normalization == "tokens":
        return sum(weights[s] * sums[s] for s in (1, 2)) / sum(counts.values())
    return sum(weights[s] * sums[s] / counts[s] for s in (1, 2) if counts[s])


@pytest.mark.parametrize("kw,weights,norm", [
    ({}, {1: 1.0, 2: 1.0}, "tokens"),
    ({"reasoning_weight": 0.5, "answer_weight": 3.0}, {1: 0.5, 2: 3.0}, "tokens"),
    ({"reasoning_weight": 0.3, "answer_weight": 0.7, "loss_normalization": "spans"},
     {1: 0.3, 2: 0.7}, "spans"),
    ({"objective": "step_by_step", "step_by_step_alpha": 0.25}, {1: 0.25, 2: 0.75}, "spans"),
])
def test_weighted_loss_equals_hand_computed_reference(tiny_model, tmp_path, kw, weights, norm):
    trainer, _ = make_trainer(tiny_model, tmp_path, **kw)
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    expected = reference(trainer.model, batch, weights, norm)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_token_scale_by_hand():
    spans = torch.tensor([[0, 1, 1, 2]])
    mask = torch.tensor([[False, True, True, True]])
    w = weight_table(0.5, 2.0)
    assert token_scale(spans, mask, w, "tokens").tolist() == [[0.0, 0.5, 0.5, 2.0]]
    # spans, no num_items: sum(scale * nll) / 3 == 0.5 * mean(reasoning) + 2 * mean(answer)
    assert token_scale(spans, mask, w, "spans").tolist() == [[0.0, 0.75, 0.75, 6.0]]
    # with num_items_in_batch=10 over 2 accumulation steps, this micro-batch adds half its loss
    assert token_scale(spans, mask, w, "spans", 10, 2).tolist() == [[0.0, 1.25, 1.25, 10.0]]
    nll = torch.tensor([[9.0, 1.0, 3.0, 4.0]])
    scaled = (token_scale(spans, mask, w, "spans", 10, 2) * nll).sum() / 10
    assert scaled.item() == pytest.approx((0.5 * (1 + 3) / 2 + 2.0 * 4) / 2)


def test_gradient_accumulation_matches_one_big_batch(tiny_model, tmp_path):
    """tokens normalization: two micro-batches with num_items_in_batch add up to the loss of
    the whole batch, as with TRL."""
    trainer, _ = make_trainer(tiny_model, tmp_path, answer_weight=2.0)
    ds = trainer.train_dataset
    whole = trainer.data_collator([ds[i] for i in range(3)])
    parts = [trainer.data_collator([ds[0]]), trainer.data_collator([ds[1], ds[2]])]
    num_items = int((whole["labels"][:, 1:] != -100).sum())
    total = sum(trainer.compute_loss(trainer.model, dict(p), num_items_in_batch=num_items)
                for p in parts)
    assert total.item() == pytest.approx(trainer.compute_loss(trainer.model, dict(whole)).item(),
                                         rel=1e-5)


def test_collator_pads_and_concatenates_span_ids(tiny_model, tmp_path):
    trainer, cols = make_trainer(tiny_model, tmp_path)
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[0], ds[1]])
    for i in range(2):
        n = len(cols["span_ids"][i])
        assert batch["span_ids"][i, :n].tolist() == cols["span_ids"][i]
        assert (batch["span_ids"][i, n:] == 0).all() and (batch["labels"][i, n:] == -100).all()
    free = SpanCollator(type(trainer.data_collator.base)(pad_token_id=0, padding_free=True))
    flat = free([ds[0], ds[1]])
    assert flat["span_ids"][0].tolist() == cols["span_ids"][0] + cols["span_ids"][1]
    assert flat["input_ids"].shape == flat["span_ids"].shape


def test_packing_keeps_documents_apart(tiny_model, tmp_path):
    """bfd packing (padding-free) gives the same loss as padded batches: span ids travel with
    the packed tokens and documents do not attend to each other."""
    kw = {"answer_weight": 2.0, "max_length": 512}
    plain, _ = make_trainer(tiny_model, tmp_path / "a", **kw)
    packed, _ = make_trainer(tiny_model, tmp_path / "b", packing=True, **kw)
    assert len(packed.train_dataset) == 1 and "seq_lengths" in packed.train_dataset.column_names
    plain.model.eval()
    packed.model.eval()
    padded = plain.data_collator([plain.train_dataset[i] for i in range(3)])
    flat = packed.data_collator([packed.train_dataset[0]])
    assert "position_ids" in flat and "attention_mask" not in flat
    with torch.no_grad():
        expected = plain.compute_loss(plain.model, dict(padded)).item()
        got = packed.compute_loss(packed.model, dict(flat)).item()
        leaky = dict(flat, position_ids=torch.arange(flat["input_ids"].shape[1])[None])
        leaked = packed.compute_loss(packed.model, leaky).item()
    assert abs(got - expected) < 1e-5 * expected
    assert abs(leaked - expected) > 1e-4 * expected  # the check would see a leak


def test_wrapped_packing_is_refused():
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="wrapped"):
        build_config(output_dir="/tmp/unused", packing=True, packing_strategy="wrapped")


def test_weights_refuse_losses_that_ignore_them(tiny_model, tmp_path):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="loss_type=dft"):
        make_trainer(tiny_model, tmp_path, answer_weight=2.0, loss_type="dft")
    make_trainer(tiny_model, tmp_path, loss_type="dft")  # plain weights: TRL's dft as is
