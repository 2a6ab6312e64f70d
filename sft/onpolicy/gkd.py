"""``distill train gkd``: TRL's ``GKDTrainer`` (generalized knowledge distillation, Agarwal et
al. 2024; experimental in TRL 1.x) on distill datasets, with ``distill train sft``'s job.

Each step, with probability ``lmbda`` the student generates its own completions for the batch's
prompts (on-policy); otherwise, with ``seq_kd``, the teacher generates them; otherwise the
dataset's completions are used. The loss is the generalized Jensen-Shannon divergence (``beta``)
between teacher and student next-token distributions on the completion tokens. The rows are
tokenized and checked by ``build_examples`` (the same sequences ``train sft`` and ``train kd``
see) and handed to TRL's ChatML collator as ids with a completion mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl.experimental.gkd import GKDConfig

from distill.errors import DistillError
from distill.sft.config import RESUME_KEY, DistillSFTConfig, added_fields
from distill.sft.kd.teacher import TEACHER_DTYPES
from distill.sft.train import Examples, Method, TrainResult, fit


@dataclass
class DistillGKDConfig(DistillSFTConfig, GKDConfig):
    r"""Config of ``distill train gkd``: ``GKDConfig`` (``lmbda``, ``beta``, ``seq_kd``,
    ``temperature``, ``max_new_tokens``, ``teacher_model_name_or_path``) with distill's data
    checks, LoRA and resume. GKD's loss weighs every completion token alike: span weights and
    the step_by_step objective do not apply."""

    teacher_model_name_or_path: str | None = field(default=None, metadata={
        "help": "The teacher: HF folder or hub id.", "aliases": ["--teacher"]})
    teacher_dtype: str = field(default="auto", metadata={
        "help": "dtype the teacher is loaded in ('auto': its checkpoint's).",
        "choices": list(TEACHER_DTYPES)})

    def __post_init__(self):
        for name in ("lmbda", "beta"):
            if not 0 <= getattr(self, name) <= 1:
                raise DistillError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise DistillError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise DistillError(f"teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}")
        super().__post_init__()
        if self.teacher_model_name_or_path is None:
            raise DistillError("distill train gkd needs --teacher MODEL")
        if self.objective != "sft" or self.span_weights() != (1.0, 1.0) \
                or self.loss_normalization != "tokens":
            raise DistillError("GKD's loss weighs every completion token alike: leave "
                               "objective, reasoning_weight, answer_weight and "
                               "loss_normalization at their defaults (or use distill train kd)")
        if self.packing:
            raise DistillError("distill train gkd does not pack sequences: the student "
                               "generates per prompt; drop --packing")


DistillGKDConfig.resume_keys = RESUME_KEY + added_fields(DistillGKDConfig)


def train_gkd(model: str | None, data: str | Path, out: str | Path, config=None, *,
              eval_data: str | Path | None = None, data_options: dict | None = None,
             **overrides) -> TrainResult:
    """GKD of the student ``model`` on the dataset folder ``data`` (its prompts; its
    completions for the off-policy share); write it to ``out``. ``config``: a
    ``DistillGKDConfig``; ``overrides``: its fields, used to build one when it is None."""
    from distill.sft.config import build_config

    config = config or build_config(config_class=DistillGKDConfig, output_dir=str(out),
                                    **overrides)
    return fit(model, data, out, config, GKDMethod(config), eval_data=eval_data,
               data_options=data_options)


class GKDMethod(Method):
    name = "gkd"

    def __init__(self, config):
        from trl.experimental.gkd import GKDTrainer

        super().__init__(GKDTrainer)
        self.config = config

    def prepare(self, tokenizer, model_path: str) -> None:
        from transformers import AutoConfig

        from distill.sft.kd.teacher import check_same_tokenizer, load_tokenizer, vocab_rows

        teacher = self.config.teacher_model_name_or_path
        check_same_tokenizer(tokenizer, load_tokenizer(teacher, "teacher"), model_path, teacher)
        rows = (vocab_rows(AutoConfig.from_pretrained(model_path)),
                vocab_rows(AutoConfig.from_pretrained(teacher)))
        if rows[0] != rows[1]:
            raise DistillError(f"GKD compares full distributions and needs equal vocabulary "
                               f"sizes; the student has {rows[0]} rows, the teacher {rows[1]}: "
                               "use distill train kd, which aligns padded vocabularies")
        self.tokenizer = tokenizer

    def datasets(self, train: Examples, eval: Examples | None):
        return self._dataset(train), None if eval is None else self._dataset(eval)

    def _dataset(self, examples: Examples):
        """TRL's ChatML collator input: ids, the completion mask (its first 1 ends the prompt
        the student generates from), and the rendered prompt."""
        from datasets.fingerprint import Hasher

        messages = examples.rows.select_columns(["messages"])
        rows = examples.report.example_rows

        def add(batch: dict, indices: list[int]) -> dict:
            chats = messages.select([rows[i] for i in indices])["messages"]
            prompts = [self.tokenizer.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in chat], tokenize=False,
                add_generation_prompt=True) for chat in chats]
            return {"completion_mask": [[int(s > 0) for s in spans]
                                        for spans in batch["span_ids"]], "prompt": prompts}

        fingerprint = Hasher.hash((examples.columns._fingerprint, self.tokenizer.chat_template))
        return examples.columns.map(add, batched=True, with_indices=True,
                                    remove_columns=["labels", "span_ids"],
                                    new_fingerprint=fingerprint, desc="data: gkd prompts")

    def trainer_kwargs(self) -> dict:
        from distill.sft.kd.teacher import load_teacher

        c = self.config
        return {"teacher_model": load_teacher(c.teacher_model_name_or_path, c.teacher_dtype)}

    def card_lines(self) -> list[str]:
        c = self.config
        return [f"- teacher: `{c.teacher_model_name_or_path}` ({c.teacher_dtype})",
                (f"- GKD (TRL GKDTrainer): on-policy share lmbda {c.lmbda:g}, generalized JSD "
                 f"beta {c.beta:g}, seq_kd {c.seq_kd}, sampling temperature {c.temperature:g}, "
                 f"max_new_tokens {c.max_new_tokens}")]
