"""``DistillKDTrainer``: ``DistillSFTTrainer`` whose loss mixes the teacher's token distributions
into the span-weighted cross-entropy.

A step: the student's backbone gives its final hidden states (no (tokens, vocab) logits); the
positions whose next token counts (labels != -100) are selected; the teacher is either run on
the same ids (online: frozen, eval mode, no grad, its own dtype and device; hidden states and
LM head make a ``DenseTeacher``) or read from the batch (offline: the cached top-k columns make
a ``SparseTeacher``); a teacher of another tokenizer (``--loss uld``) runs on its own
sequences, paired with the student's counted tokens as ``distill.sft.kd.cross`` says, and
covers only the tokens it has a partner for; ``kd_loss`` reduces
``w_t * (alpha * kd_t + (1 - alpha) * ce_t) / D`` chunk by chunk, with ``w_t`` the span weights and ``D`` TRL's token count, so weights 1/1 and
alpha 0 give ``distill train sft``'s loss.

``loss_terms`` returns named terms that are summed into the loss; a subclass adds its own
(feature or attention transfer) from the ``KDBatch``, which holds both models' outputs
(``student_outputs``/``teacher_outputs`` kwargs ask for hidden states or attentions).

Several online teachers (``--teachers``): each runs on the batch and the target is their
``MixtureTeacher`` with the weights of a ``TeacherMixture`` (``args.teacher_aggregation``); learned
weights train in their own optimizer group, are logged (``teacher_weight_i``) and saved with
their logits to ``teacher_weights.json`` (in each checkpoint too, so a resumed run continues).
"""

from __future__ import annotations

import functools
import json
import types
from dataclasses import dataclass
from typing import ClassVar

import torch
from accelerate.utils import is_peft_model
from torch import Tensor
from transformers import TrainerCallback

from distill.errors import DistillError
from distill.sft.kd.cross import (
    TEACHER_COLUMNS,
    TEACHER_IDS,
    TEACHER_INDEX,
    TEACHER_MASK,
    TeacherSequenceCollator,
)
from distill.sft.kd.losses import DenseTeacher, MixtureTeacher, SparseTeacher, kd_loss
from distill.sft.trainer import SPAN_COLUMN, DistillSFTTrainer

TOPK_IDS, TOPK_LOGPROBS = "teacher_topk_ids", "teacher_topk_logprobs"
TOPK_COLUMNS = (TOPK_IDS, TOPK_LOGPROBS)
WEIGHTS_FILE = "teacher_weights.json"


class TopKCollator:
    """Wraps the span collator: per example, the cached top-k ids and log-probs of the tokens
    whose label counts (one entry per token, aligned with ``labels``), stacked over the batch
    in order to (N, k): the order in which the loss selects counted positions, padded or
    padding-free (packed rows keep their tokens' order)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        if TOPK_IDS not in examples[0]:
            return self.base(examples)
        ids, logprobs = [], []
        for e in examples:
            for label, i, p in zip(e["labels"], e[TOPK_IDS], e[TOPK_LOGPROBS]):
                if label != -100:
                    ids.append(i)
                    logprobs.append(p)
        batch = self.base([{k: v for k, v in e.items() if k not in TOPK_COLUMNS}
                           for e in examples])
        batch[TOPK_IDS] = torch.tensor(ids, dtype=torch.long)
        batch[TOPK_LOGPROBS] = torch.tensor(logprobs, dtype=torch.float32)
        return batch


@dataclass
class KDBatch:
    """One micro-batch as the loss terms see it. ``mask`` (B, L-1) marks the positions whose
    next token counts; the N selected rows follow it in row-major order."""

    inputs: dict  # the model inputs (input_ids, attention_mask or position_ids, ...)
    mask: Tensor
    labels: Tensor  # (N,) the counted next tokens
    weights: Tensor | None  # (N,) span weights (None: all 1)
    num_items_in_batch: Tensor | int | None  # Trainer's count of the accumulated batch
    student: object  # the student backbone's outputs (last_hidden_state, ...)
    teacher: object | None  # the online teacher backbone's outputs; None offline
    target: DenseTeacher | SparseTeacher | MixtureTeacher
    temperature: float
    alpha: float
    covered: Tensor | None = None  # (N,) the positions with a teacher (None: all)

    @property
    def normalizer(self):
        """D: the counted tokens of the accumulated batch (TRL's), else of this micro-batch."""
        return self.mask.sum() if self.num_items_in_batch is None else self.num_items_in_batch


class DistillKDTrainer(DistillSFTTrainer):
    """``DistillSFTTrainer`` with a teacher; ``args`` is a ``DistillKDConfig``. ``teacher``: the
    online teacher model (``distill.sft.kd.teacher.load_teacher``), a list of them (a mixture,
    weighted as ``args.teacher_aggregation`` says), or None when the datasets carry the cached
    top-k columns; ``vocab_size``: the shared vocabulary of an offline cache."""

    _tag_names: ClassVar[list[str]] = ["trl", "sft", "distill", "knowledge-distillation"]
    extra_columns: ClassVar[tuple[str, ...]] = (SPAN_COLUMN, *TOPK_COLUMNS, *TEACHER_COLUMNS)
    # Backbone kwargs of each forward, for subclasses that need more (e.g. output_hidden_states).
    student_outputs: ClassVar[dict] = {}
    teacher_outputs: ClassVar[dict] = {}

    def __init__(self, *args, teacher=None, vocab_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = TeacherSequenceCollator(TopKCollator(self.data_collator))
        teachers = teacher if isinstance(teacher, list) else [teacher] * (teacher is not None)
        self.teacher, self.vocab_size = (teachers[0] if teachers else None), vocab_size
        add_backbone_forward(self.model.get_base_model() if is_peft_model(self.model)
                             else self.model)
        self._teacher_heads = []
        for t in teachers:
            t.eval()
            t.requires_grad_(False)
            head = t.get_output_embeddings().weight.detach()
            self._teacher_heads.append(head.to(self.args.device))  # no copy if it is there
        self._teacher_head = self._teacher_heads[0] if teachers else None
        self.teachers, self.mixture = teachers, None
        if isinstance(teacher, list):
            self._init_mixture()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = self.kd_batch(model, inputs, num_items_in_batch)
        terms = self.loss_terms(model, batch)
        loss = sum(terms.values())
        self._count_tokens(inputs)
        return (loss, batch.student) if return_outputs else loss

    def kd_batch(self, model, inputs, num_items_in_batch=None) -> KDBatch:
        """Run the student (and an online teacher) and select the counted positions."""
        span_ids = inputs.pop(SPAN_COLUMN, None)
        cached = [inputs.pop(c, None) for c in TOPK_COLUMNS]
        own = [inputs.pop(c, None) for c in (TEACHER_IDS, TEACHER_MASK, TEACHER_INDEX)]
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        student = model(**inputs, backbone_only=True, **self.student_outputs)
        mask = labels[:, 1:] != -100
        counted = labels[:, 1:][mask]
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        temperature, alpha = self.args.schedule(step, total)
        weights = None
        if span_ids is not None:
            scale = self._scale(span_ids[:, 1:], mask, num_items_in_batch)
            weights = None if scale is None else scale[mask]
        teacher_out = covered = None
        if own[0] is not None:  # a teacher of another tokenizer, on its own sequences
            ids, attention, index = own
            out = self._teacher_forward({"input_ids": ids, "attention_mask": attention})
            hidden = out.last_hidden_state.flatten(0, 1)
            if index.shape[0] != counted.shape[0]:
                raise DistillError(f"the teacher's pairing covers {index.shape[0]} tokens of "
                                   f"this batch, its labels count {counted.shape[0]}")
            covered = (index >= 0).to(counted.device)
            hidden = hidden[index.clamp(min=0).to(hidden.device)].to(counted.device)
            hidden[~covered] = 0  # unpaired rows may point at a fully masked (NaN) sequence
            target = DenseTeacher(hidden, self._teacher_head)
        elif self.mixture is not None:
            parts = []
            for model_t, head in zip(self.teachers, self._teacher_heads):
                out = self._teacher_forward(inputs, model_t).last_hidden_state[:, :-1]
                parts.append(DenseTeacher(out[mask.to(out.device)].to(counted.device), head))
            target = MixtureTeacher(parts, self.mixture.weights().to(counted.device))
        elif self.teacher is not None:
            teacher_out = self._teacher_forward(inputs)
            hidden = teacher_out.last_hidden_state[:, :-1][mask.to(
                teacher_out.last_hidden_state.device)]
            target = DenseTeacher(hidden.to(counted.device), self._teacher_head)
        elif cached[0] is not None:
            ids, logprobs = cached
            if ids.shape[0] != counted.shape[0]:
                raise DistillError(f"the cached teacher log-probs cover {ids.shape[0]} tokens of "
                                   f"this batch, its labels count {counted.shape[0]}: the cache "
                                   "does not belong to these training sequences")
            target = SparseTeacher(ids, logprobs, self.vocab_size)
            if ids.numel() and bool((ids[:, 0] < 0).any()):  # cross-tokenizer: no teacher row
                covered = ids[:, 0] >= 0
        else:
            raise DistillError("no teacher for this batch: pass teacher= or datasets with the "
                               "cached top-k columns (distill logits capture)")
        return KDBatch(inputs, mask, counted, weights, num_items_in_batch, student, teacher_out,
                       target, temperature, alpha, covered)

    def loss_terms(self, model, batch: KDBatch) -> dict[str, Tensor]:
        """Named loss terms, summed into the loss; this one has the logit term only."""
        args = self.args
        head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
        hidden = batch.student.last_hidden_state[:, :-1][batch.mask]
        out = kd_loss(hidden, head, batch.target, batch.labels, batch.weights, loss=args.loss,
                      temperature=batch.temperature, alpha=batch.alpha, beta=args.beta,
                      top_k=args.top_k, entropy_threshold=args.entropy_threshold,
                      normalizer=batch.normalizer, chunk_size=args.kd_chunk_size,
                      covered=batch.covered)
        loss = out.loss
        # Like TRL: a count of every rank's tokens, while DDP averages the gradients
        if args.average_tokens_across_devices and batch.num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_kd(out, batch)
        return {"logits": loss}

    def _teacher_forward(self, inputs: dict, teacher=None):
        """The teacher backbone (default ``self.teacher``) on the student's inputs: no grad,
        its own device and dtype."""
        teacher = self.teacher if teacher is None else teacher
        device = teacher.device
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            return teacher.base_model(**moved, **self.teacher_outputs)

    def _init_mixture(self) -> None:
        """The teachers' mixing weights; learned ones train on one process only."""
        from distill.sft.kd.multi_teacher import TeacherMixture

        a = self.args
        self.mixture = TeacherMixture(len(self.teachers), a.teacher_aggregation,
                                      a.weight_list()).to(a.device)
        if a.teacher_aggregation == "learned":
            if a.world_size > 1:
                raise DistillError("learned teacher weights train on one process only: run on "
                                   "one device, or use average or fixed weights")
            self.add_callback(ZeroGrad(self.mixture))

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        params = [] if self.mixture is None else list(self.mixture.parameters())
        if params and not any(p is params[0] for g in optimizer.param_groups
                              for p in g["params"]):
            optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.mixture is None or not self.args.should_save:
            return
        from pathlib import Path

        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"teachers": self.args.teacher_list(),
                  "aggregation": self.args.teacher_aggregation,
                  "weights": self.mixture.weights().tolist()}
        if self.args.teacher_aggregation == "learned":
            record["logits"] = self.mixture.logits.tolist()
        (folder / WEIGHTS_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        from pathlib import Path

        path = Path(resume_from_checkpoint) / WEIGHTS_FILE
        if self.mixture is not None and self.args.teacher_aggregation == "learned" \
                and path.exists():
            with torch.no_grad():
                self.mixture.logits.copy_(torch.tensor(json.loads(path.read_text())["logits"]))

    def _log_kd(self, out, batch: KDBatch) -> None:
        """Weighted per-token means of kd_t and ce_t; the temperature and alpha in use."""
        norm = torch.as_tensor(batch.normalizer, dtype=torch.float32, device=out.kd.device)
        weight = (torch.tensor(float(batch.labels.numel()), device=out.kd.device)
                  if batch.weights is None else batch.weights.float().sum())
        sums = self.accelerator.reduce(torch.stack([out.kd * norm, out.ce * norm, weight]), "sum")
        mode = "train" if self.model.training else "eval"
        kd, ce, total = sums.tolist()
        if total > 0:
            self._metrics[mode]["kd"].append(kd / total)
            self._metrics[mode]["ce"].append(ce / total)
        self._metrics[mode]["temperature"].append(batch.temperature)
        self._metrics[mode]["kd_alpha"].append(batch.alpha)
        if self.mixture is not None:
            for i, w in enumerate(self.mixture.weights().tolist()):
                self._metrics[mode][f"teacher_weight_{i}"].append(w)

    def _count_tokens(self, inputs: dict) -> None:
        """TRL's ``num_tokens`` count (the tokens/s in the summary)."""
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["position_ids"].size(1),
                                     device=inputs["position_ids"].device)
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(local).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


def add_backbone_forward(model) -> None:
    """Let ``model(..., backbone_only=True)`` return the backbone's outputs (final hidden
    states, no logits), through any wrapper (PEFT, DDP); other calls are unchanged."""
    if getattr(model, "_distill_backbone_forward", False):
        return
    forward = model.forward

    @functools.wraps(type(model).forward)
    def _forward(self, *args, backbone_only=False, **kwargs):
        if not backbone_only:
            return forward(*args, **kwargs)
        return self.base_model(*args, **kwargs)

    model.forward = types.MethodType(_forward, model)
    model._distill_backbone_forward = True


class ZeroGrad(TrainerCallback):
    """Clears the projections' gradients after each optimizer step (Trainer clears only the
    model's)."""

    def __init__(self, module):
        self.module = module

    def on_step_end(self, args, state, control, **kwargs):
        self.module.zero_grad(set_to_none=True)
