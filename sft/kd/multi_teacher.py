"""Several teachers, one target: their token distributions mixed into one.

``TeacherMixture`` takes each teacher's logits (or log-probs) over a shared vocabulary and
returns the log-probs of the mixture ``sum_k w_k softmax(z_k / T)``, a distribution to use
wherever a single teacher's would go. Weights are ``average`` (1/K), ``fixed`` (given, then
normalized to sum to 1) or ``learned`` (softmax of a parameter, trained by the loss it feeds:
minimizing KL(mixture || student) moves weight toward the teachers the student already agrees
with, so log the weights and watch them). ``distill train kd --teachers`` takes its weights
(and trains the learned ones) with the chunked loss's ``MixtureTeacher`` target
(``distill.sft.kd.losses``).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.errors import DistillError

AGGREGATIONS = ("average", "fixed", "learned")


class TeacherMixture(nn.Module):
    def __init__(self, n_teachers: int, aggregation: str = "average",
                 weights: list[float] | None = None):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise DistillError(f"teacher aggregation must be one of {', '.join(AGGREGATIONS)}, "
                               f"got {aggregation!r}")
        if n_teachers < 1:
            raise DistillError("multi-teacher distillation needs at least one teacher")
        if (aggregation == "fixed") != (weights is not None):
            raise DistillError("teacher weights go with aggregation 'fixed', and it needs them")
        self.aggregation, self.n_teachers = aggregation, n_teachers
        if aggregation == "fixed":
            w = torch.as_tensor(weights, dtype=torch.float32)
            if w.shape != (n_teachers,) or (w < 0).any() or w.sum() <= 0:
                raise DistillError(f"teacher weights: need {n_teachers} non-negative numbers "
                                   f"with a positive sum, got {list(weights)}")
            self.register_buffer("fixed_weights", w / w.sum())
        elif aggregation == "learned":
            self.logits = nn.Parameter(torch.zeros(n_teachers))

    def weights(self) -> torch.Tensor:
        """The teachers' mixing weights (sum to 1)."""
        if self.aggregation == "average":
            return torch.full((self.n_teachers,), 1.0 / self.n_teachers)
        if self.aggregation == "fixed":
            return self.fixed_weights
        return self.logits.softmax(0)

    def forward(self, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
        """Log-probs [..., vocab] of the mixture of ``teacher_logits`` (a list of [..., vocab]
        tensors, one per teacher, same shape) at ``temperature``."""
        if len(teacher_logits) != self.n_teachers:
            raise DistillError(f"expected logits of {self.n_teachers} teachers, got "
                               f"{len(teacher_logits)}")
        shapes = {tuple(t.shape) for t in teacher_logits}
        if len(shapes) > 1:
            raise DistillError(f"teachers' logits differ in shape {sorted(shapes)}: multi-teacher "
                               "distillation needs one tokenizer and vocabulary")
        logp = torch.stack([(t.float() / temperature).log_softmax(-1) for t in teacher_logits])
        w = self.weights().to(logp.device).log().reshape(-1, *[1] * (logp.dim() - 1))
        return torch.logsumexp(logp + w, dim=0)
