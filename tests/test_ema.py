"""Self-distillation: the EMA teacher's update and its Trainer callback."""

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from distill.errors import DistillError
from distill.sft.kd.ema import EMACallback, EMATeacher


def small_llama(seed=0, layers=3):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=layers, num_attention_heads=2,
                                        num_key_value_heads=2))


def test_update_matches_the_formula():
    student = small_llama()
    ema = EMATeacher(student, decay=0.9)
    assert all(not p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    before = {n: p.clone() for n, p in ema.model.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.model.rotary_emb.inv_freq.mul_(2)
    ema.update(student)
    for name, p in ema.model.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        assert torch.allclose(p, expected, atol=1e-6), name
    assert torch.equal(ema.model.model.rotary_emb.inv_freq, student.model.rotary_emb.inv_freq)
    frozen = EMATeacher(student, decay=1.0)
    snapshot = [p.clone() for p in frozen.model.parameters()]
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    frozen.update(student)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, frozen.model.parameters()))
    with pytest.raises(DistillError, match="decay must be in"):
        EMATeacher(student, decay=1.5)


def test_callback_updates_once_per_optimizer_step(tmp_path):
    student = small_llama()
    ema = EMATeacher(student, decay=0.8)
    expected = {n: p.clone() for n, p in ema.model.named_parameters()}
    steps = []

    class Record(TrainerCallback):  # runs before the EMA callback: applies the formula
        def on_step_end(self, args, state, control, model=None, **kwargs):
            steps.append(state.global_step)
            for n, p in model.named_parameters():
                expected[n] = 0.8 * expected[n] + 0.2 * p.detach()

    torch.manual_seed(0)
    ids = torch.randint(0, 64, (8, 6)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, learning_rate=1e-2, report_to=[],
                             save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=student, args=args, train_dataset=data,
                      callbacks=[Record(), EMACallback(ema)])
    trainer.train()
    assert steps == [1, 2, 3]
    for n, p in ema.model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-6), n
    assert not all(torch.equal(p, q) for p, q in zip(ema.model.parameters(),
                                                     student.parameters()))


def test_ema_of_a_loaded_model(tiny_model):
    student = AutoModelForCausalLM.from_pretrained(tiny_model)
    ema = EMATeacher(student, decay=0.5)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(ema(input_ids=ids).logits, student(input_ids=ids).logits.detach())
