"""Self-distillation: the student's exponential moving average as its own teacher.

``EMATeacher`` keeps a frozen copy of the student and, after each optimizer step,
``p_ema <- d * p_ema + (1 - d) * p_student`` for every parameter (buffers are copied).
``EMACallback`` does that update from a transformers ``Trainer``; ``distill train kd
--self-distill-decay`` uses both (``distill.sft.kd.transfer``).
"""

from __future__ import annotations

import copy

import torch
from transformers import TrainerCallback

from distill.errors import DistillError


class EMATeacher:
    def __init__(self, student: torch.nn.Module, decay: float = 0.999):
        if not 0.0 <= decay <= 1.0:
            raise DistillError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(student).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """One EMA step toward ``student`` (same architecture as the copy)."""
        params = dict(student.named_parameters())
        for name, p in self.model.named_parameters():
            p.mul_(self.decay).add_(params[name].detach().to(p.dtype), alpha=1 - self.decay)
        buffers = dict(student.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(buffers[name])

    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            return self.model(*args, **kwargs)


class EMACallback(TrainerCallback):
    """Updates an ``EMATeacher`` after every optimizer step of a ``Trainer``, from ``student``
    (the module it copied; default: the trainer's model, DDP-unwrapped)."""

    def __init__(self, ema: EMATeacher, student: torch.nn.Module | None = None):
        self.ema, self.student = ema, student

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(self.student if self.student is not None else _unwrap(model))


def _unwrap(model):
    while hasattr(model, "module"):  # DDP and friends
        model = model.module
    return model
