"""``DistillSFTConfig``: TRL's ``SFTConfig`` plus the fields distillation needs, and recipe
loading (a YAML file of config fields, then ``--name value`` flags on top)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from trl import SFTConfig

from distill.errors import DistillError

# Recipe keys that are trainer inputs, not config fields.
INPUT_KEYS = ("model", "data", "eval_data", "out")
# Fields that change what a run computes: a resumed run must match them; the card lists them.
RESUME_KEY = (
    "reasoning_weight", "answer_weight", "loss_normalization", "objective", "step_by_step_alpha",
    "label_prefix", "rationale_prefix", "answer_span_field", "use_lora", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed",
    "max_length", "packing", "packing_strategy", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "optim", "bf16", "fp16", "loss_type", "max_grad_norm", "adam_beta1",
    "adam_beta2", "adam_epsilon", "shuffle_dataset")


@dataclass
class DistillSFTConfig(SFTConfig):
    r"""``SFTConfig`` for ``distill train sft``. Every ``SFTConfig`` / ``TrainingArguments`` field
    works as before; the fields below add span-weighted losses, the distilling step-by-step
    objective, fail-closed data checks, LoRA and resume. Differences from ``SFTConfig``'s
    defaults: ``bf16`` is on only where the hardware has it (not on CPU), and ``max_length``
    truncation is done (and counted) by distill before TRL sees the data."""

    # Fields a resumed run must match; subclasses (kd, gkd) add theirs.
    resume_keys: ClassVar[tuple[str, ...]] = RESUME_KEY

    # Loss
    reasoning_weight: float = field(default=1.0, metadata={
        "help": "Weight of completion tokens before the final answer (the reasoning)."})
    answer_weight: float = field(default=1.0, metadata={
        "help": "Weight of the final answer's tokens (from the row's answer_span) and of every "
        "completion token after it, end-of-turn included."})
    loss_normalization: str = field(default="tokens", metadata={
        "help": "'tokens': sum(weight * token loss) / number of counted tokens (weights 1/1 give "
        "TRL's loss exactly). 'spans': reasoning_weight * mean reasoning loss + answer_weight * "
        "mean answer loss (means per micro-batch).", "choices": ["tokens", "spans"]})
    objective: str = field(default="sft", metadata={
        "help": "'sft': one target per row, the completion. 'step_by_step': distilling "
        "step-by-step (Hsieh et al. 2023), two targets per row: the label (answer) after "
        "label_prefix and the rationale after rationale_prefix, mixed by step_by_step_alpha.",
        "choices": ["sft", "step_by_step"]})
    step_by_step_alpha: float = field(default=0.5, metadata={
        "help": "step_by_step: loss = (1 - alpha) * label loss + alpha * rationale loss."})
    label_prefix: str = field(default="[label] ", metadata={
        "help": "step_by_step: put before the last user message to ask for the answer alone."})
    rationale_prefix: str = field(default="[rationale] ", metadata={
        "help": "step_by_step: put before the last user message to ask for the rationale."})
    drop_few_shot: bool = field(default=False, metadata={
        "help": "Train on the system message and the last user message only, dropping the "
        "few-shot exemplar turns of the teacher's prompt (context distillation: the student "
        "learns to answer zero-shot what the teacher answered with exemplars)."})
    answer_span_field: str = field(default="answer_span", metadata={
        "help": "Column with [start, end] character offsets of the answer in the completion."})
    # Fail closed
    on_truncated: str = field(default="drop", metadata={
        "help": "Rows that max_length cuts before the end of their answer (or, without an answer "
        "span, of their completion): 'drop' them (counted and reported) or 'error'.",
        "choices": ["drop", "error"]})
    on_bad_row: str = field(default="error", metadata={
        "help": "Rows with an all-zero loss mask, a missing (when needed) or unmappable answer "
        "span, or a completion the chat template does not render verbatim: 'error' or 'drop'.",
        "choices": ["error", "drop"]})
    max_dropped_fraction: float = field(default=0.1, metadata={
        "help": "Stop before training when more than this fraction of rows would be dropped."})
    # LoRA
    use_lora: bool = field(default=False, metadata={
        "help": "Train a LoRA adapter (PEFT) instead of every weight."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Comma-separated module names, or 'all-linear' (every linear layer but lm_head)."})
    merge_lora: bool = field(default=True, metadata={
        "help": "Save the merged model in output_dir (the adapter goes to output_dir/adapter)."})
    # Resume
    restart: bool = field(default=False, metadata={
        "help": "Delete the checkpoints in output_dir and start over. Without it, rerunning the "
        "same command resumes from the last complete checkpoint."})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            self.bf16 = bf16_available()
        super().__post_init__()
        for name in ("reasoning_weight", "answer_weight", "step_by_step_alpha"):
            if getattr(self, name) < 0:
                raise DistillError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.step_by_step_alpha <= 1:
            raise DistillError(f"step_by_step_alpha must be in [0, 1], got {self.step_by_step_alpha}")
        if self.objective == "step_by_step" and (self.reasoning_weight, self.answer_weight) != (1, 1):
            raise DistillError("step_by_step mixes its two targets with step_by_step_alpha; "
                               "leave reasoning_weight and answer_weight at 1")
        if self.reasoning_weight == 0 and self.answer_weight == 0:
            raise DistillError("reasoning_weight and answer_weight are both 0: nothing to learn")
        if self.packing and self.packing_strategy == "wrapped":
            raise DistillError("packing_strategy 'wrapped' cuts rows mid-sequence and lets them attend "
                               "across each other, which breaks prompt/answer masks; use 'bfd'")
        for name, choices in (("loss_normalization", ("tokens", "spans")),
                              ("objective", ("sft", "step_by_step")),
                              ("on_truncated", ("drop", "error")), ("on_bad_row", ("error", "drop"))):
            if getattr(self, name) not in choices:
                raise DistillError(f"{name} must be one of {', '.join(choices)}")

    def span_weights(self) -> tuple[float, float]:
        """(reasoning, answer) weights the loss uses; step_by_step maps alpha onto them."""
        if self.objective == "step_by_step":
            return self.step_by_step_alpha, 1.0 - self.step_by_step_alpha
        return self.reasoning_weight, self.answer_weight

    def normalization(self) -> str:
        return "spans" if self.objective == "step_by_step" else self.loss_normalization

    def needs_answer_span(self) -> bool:
        rw, aw = self.span_weights()
        return self.objective == "step_by_step" or rw != aw or self.normalization() == "spans"

    def lora_config(self):
        from peft import LoraConfig

        targets = self.lora_target_modules
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")


def bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_train_config(path: str | Path | None, config_class=None) -> dict:
    """A recipe YAML: config fields (of ``config_class``, default ``DistillSFTConfig``) plus the
    inputs ``model``, ``data``, ``eval_data``, ``out``."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{path}: no such recipe file")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DistillError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(recipe, dict):
        raise DistillError(f"{path}: a recipe is a mapping of config fields")
    known = {f.name for f in fields(config_class or DistillSFTConfig)} | set(INPUT_KEYS)
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise DistillError(f"{path}: unknown keys {', '.join(unknown)} (not SFTConfig fields)")
    return recipe


def build_config(recipe: dict | None = None, args: list[str] | None = None, *,
                 config_class=None, **overrides) -> DistillSFTConfig:
    """Defaults < recipe fields < ``overrides`` < ``--name value`` args (any field of
    ``config_class``, default ``DistillSFTConfig``)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_class or DistillSFTConfig)
    values = {k: v for k, v in (recipe or {}).items() if k not in INPUT_KEYS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    parser.set_defaults(**values)
    try:
        config, rest = parser.parse_args_into_dataclasses(args=list(args or []),
                                                          return_remaining_strings=True)
    except SystemExit:
        raise DistillError("invalid training argument (see the message above)") from None
    if rest:
        raise DistillError(f"unknown training arguments: {' '.join(rest)} "
                           "(see --help-config)")
    return config


def config_help(config_class=None) -> str:
    from transformers import HfArgumentParser

    return HfArgumentParser(config_class or DistillSFTConfig).format_help()
