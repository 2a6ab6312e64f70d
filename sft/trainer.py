"""``DistillSFTTrainer``: TRL's ``SFTTrainer`` with span-weighted losses.

It takes datasets that ``distill.sft.data`` already tokenized (``input_ids``, ``labels``,
``span_ids``) and changes four small things: it keeps the ``span_ids`` column (signature
columns, the collator, packing), and ``compute_loss`` weights the per-token log-probs of TRL's
fused LM head by span before TRL reduces them. Everything else (the forward, the reduction,
metrics, gradient accumulation, PEFT, gradient checkpointing, padding-free packing) is TRL's.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from trl import SFTTrainer
from trl.data_utils import pack_dataset

from distill.errors import DistillError
from distill.sft.spans import span_sums, token_scale, weight_table

SPAN_COLUMN = "span_ids"


class SpanCollator:
    """Wraps TRL's collator and pads (or, padding-free, concatenates) ``span_ids`` the same way
    it does the labels; 0 (not counted) fills the padding."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        if SPAN_COLUMN not in examples[0]:
            return self.base(examples)
        spans = [torch.as_tensor(e[SPAN_COLUMN], dtype=torch.long) for e in examples]
        batch = self.base([{k: v for k, v in e.items() if k != SPAN_COLUMN} for e in examples])
        out = torch.zeros(batch["input_ids"].shape, dtype=torch.long)
        if getattr(self.base, "padding_free", False):
            flat = torch.cat(spans)
            out[0, :len(flat)] = flat
        else:
            for i, s in enumerate(spans):
                out[i, :len(s)] = s
        batch[SPAN_COLUMN] = out
        return batch


class DistillSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss weights reasoning and answer tokens apart (see
    ``distill.sft.spans``); ``args`` is a ``DistillSFTConfig``."""

    _tag_names: ClassVar[list[str]] = ["trl", "sft", "distill"]
    # Columns besides input_ids and labels that reach the collator (kept, packed along).
    extra_columns: ClassVar[tuple[str, ...]] = (SPAN_COLUMN,)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TRL chose its collator (padded or padding-free); teach it the span column.
        self.data_collator = SpanCollator(self.data_collator)
        reasoning, answer = self.args.span_weights()
        self.span_weights = weight_table(reasoning, answer)
        self.loss_normalization = self.args.normalization()
        self.weighted = self.loss_normalization != "tokens" or (reasoning, answer) != (1, 1)
        if self.weighted:
            self._refuse_unweightable()

    def _refuse_unweightable(self) -> None:
        """Paths of SFTTrainer.compute_loss that do not reduce the fused log-probs."""
        why = None
        if self.args.loss_type != "nll":
            why = f"loss_type={self.args.loss_type}"
        elif self.label_smoother is not None:
            why = "label_smoothing_factor > 0"
        elif self.compute_loss_func is not None:
            why = "a compute_loss_func"
        pc = getattr(self.accelerator, "parallelism_config", None)
        if pc is not None and (pc.sp_enabled or pc.cp_enabled):
            why = "sequence or context parallelism"
        if why:
            raise DistillError(f"span weights (reasoning/answer weights, spans normalization, "
                               f"step_by_step) cannot be combined with {why}")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        missing = [c for c in self.extra_columns if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *missing]

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func,
                         dataset_name):
        columns = dataset.column_names or []
        if not packing or SPAN_COLUMN not in columns:
            return super()._prepare_dataset(dataset, processing_class, args, packing,
                                            formatting_func, dataset_name)
        # TRL packs input_ids and labels only; pack span_ids (and the extra columns) along
        # (rows are already truncated to max_length, so BFD never cuts one).
        extra = [c for c in self.extra_columns if c in columns]
        dataset = dataset.select_columns(["input_ids", "labels", *extra])
        if args.shuffle_dataset:
            dataset = dataset.shuffle(seed=args.seed)
        dataset = pack_dataset(dataset, args.max_length, args.packing_strategy,
                               {"num_proc": args.dataset_num_proc,
                                "desc": f"Packing {dataset_name} dataset"})
        return dataset.shuffle(seed=args.seed) if args.shuffle_dataset else dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        span_ids = inputs.pop(SPAN_COLUMN, None)
        if span_ids is not None:
            model = _SpanWeighted(self, model, span_ids, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _scale(self, span_ids, label_mask, num_items_in_batch):
        if not self.weighted:
            return None
        group = 1
        if num_items_in_batch is not None and self.loss_normalization == "spans":
            group = self.current_gradient_accumulation_steps if self.model.training else 1
            if self.args.average_tokens_across_devices:
                group *= self.accelerator.num_processes // self.get_tp_size()
        return token_scale(span_ids, label_mask, self.span_weights, self.loss_normalization,
                           num_items_in_batch, group)

    def _log_spans(self, log_probs, span_ids, label_mask) -> None:
        sums = self.accelerator.reduce(span_sums(log_probs, span_ids, label_mask), "sum")
        mode = "train" if self.model.training else "eval"
        for (total, count), name in zip(sums.tolist(), ("reasoning_nll", "answer_nll")):
            if count > 0:
                self._metrics[mode][name].append(total / count)


class _SpanWeighted:
    """Stands in for the model inside ``SFTTrainer.compute_loss``: calls it, then weights the
    fused LM head's per-token log-probs by span, so TRL's own reduction applies to them."""

    def __init__(self, trainer: DistillSFTTrainer, model, span_ids, num_items_in_batch):
        self.trainer, self.model = trainer, model
        self.span_ids, self.num_items = span_ids, num_items_in_batch

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if not kwargs.get("fused_lm_head"):
            return out
        spans = self.span_ids[:, 1:].to(out.log_probs.device)
        if spans.shape != out.log_probs.shape:  # e.g. pre-shifted, sharded labels
            if not self.trainer.weighted:
                return out
            raise DistillError("span ids do not line up with the log-probs "
                               f"({tuple(spans.shape)} vs {tuple(out.log_probs.shape)})")
        self.trainer._log_spans(out.log_probs.detach(), spans, out.label_mask)
        scale = self.trainer._scale(spans, out.label_mask, self.num_items)
        if scale is not None:
            out.log_probs = out.log_probs * scale.to(out.log_probs.dtype)
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)
