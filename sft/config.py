"""``DistillSFTConfig``: TRL's ``SFTConfig`` plus the fields distillation needs; and the one
parser of ``distill train``'s flags and recipes (a YAML file of config fields and
``TrainInputs``, then ``--name value`` flags on top), generated from the dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from trl import SFTConfig

from distill.errors import DistillError
from distill.flags import deprecated, renamed
from distill.sft.train import TrainInputs, read_inputs

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

    # Fields a resumed run must match; subclasses (kd, onpolicy) add theirs.
    resume_keys: ClassVar[tuple[str, ...]] = RESUME_KEY
    # Old field names (flags and recipe keys) still accepted, with a notice: old -> new.
    renamed_fields: ClassVar[dict[str, str]] = {}

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
        "help": "Drop the few-shot exemplar turns of the teacher's prompt, keeping the system "
        "message and the turns the sample had (the row's shots column says how many exemplars; "
        "rows without it keep the last message only): context distillation, the student "
        "learns to answer zero-shot what the teacher answered with exemplars."})
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
        "help": "Train a LoRA adapter (PEFT) instead of every weight.", "aliases": ["--lora"]})
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
        "same command resumes from the last complete checkpoint; a finished run (its last "
        "step reached) is left as it is, unless max_steps grows."})
    overwrite: bool = field(default=False, metadata={
        "help": "Write into --out even when it holds files distill train did not write: they "
        "are moved aside to OUT.replaced-<timestamp>/, never deleted."})

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


def added_fields(config_class, base=None) -> tuple[str, ...]:
    """The fields ``config_class`` adds to ``base`` (default ``DistillSFTConfig``)."""
    inherited = {f.name for f in fields(base or DistillSFTConfig)}
    return tuple(f.name for f in fields(config_class) if f.name not in inherited)


def load_train_config(path: str | Path | None, config_class=None) -> dict:
    """A recipe YAML: config fields (of ``config_class``, default ``DistillSFTConfig``) plus the
    ``TrainInputs`` (student, data, eval_data, out)."""
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
    config_class = config_class or DistillSFTConfig
    recipe = renamed_keys(recipe, config_class)
    known = {f.name for f in fields(config_class)} | {f.name for f in fields(TrainInputs)}
    unknown = sorted(set(recipe) - (known - {"config"}))
    if unknown:
        raise DistillError(f"{path}: unknown keys {', '.join(unknown)} (not SFTConfig fields)")
    return recipe


def renamed_keys(values: dict, config_class) -> dict:
    """``values`` with the old names of ``TrainInputs`` and ``config_class`` fields replaced by
    the new ones, with the notice."""
    values = dict(values)
    for old, new in {**TrainInputs.renamed_fields, **config_class.renamed_fields}.items():
        if old in values:
            deprecated(f"the key {old!r}", repr(new))
            if new in values:
                raise DistillError(f"give {new} once ({old} is its old name)")
            values[new] = values.pop(old)
    return values


def train_parser(config_class, **kwargs):
    """``HfArgumentParser`` of ``TrainInputs`` and ``config_class``: a flag per field (with
    dashes or underscores), old names as hidden flags that print the notice, no
    abbreviations. ``kwargs``: ``prog``, ``description``, ``epilog``."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser([TrainInputs, config_class], allow_abbrev=False, **kwargs)
    for old, new in {**TrainInputs.renamed_fields, **config_class.renamed_fields}.items():
        action = next(a for a in parser._actions if a.dest == new)
        for spelling in dict.fromkeys([f"--{old}", f"--{old.replace('_', '-')}"]):
            renamed(parser, spelling, action.option_strings[-1], type=action.type)
    own = {f.name for f in fields(TrainInputs)} | set(added_fields(config_class, SFTConfig))
    for action in parser._actions:
        if action.dest == "field":  # repeatable, as in every command (flags.add_data_flags)
            action.__class__, action.nargs, action.default = argparse._AppendAction, None, []
        if action.dest in own:
            action.option_strings.sort(key=lambda s: "_" in s)  # help shows distill's dashes
        elif action.dest == "output_dir":
            action.help = argparse.SUPPRESS  # refused: the output folder is --out
    parser.add_argument("--help-config", action="help", help=argparse.SUPPRESS)
    return parser


def parse_train_args(config_class, argv: list[str], **kwargs) -> tuple[TrainInputs, object]:
    """``distill train``'s command line: the inputs and the config (``config_class``), flags
    over the fields of the ``--config`` recipe over the defaults. ``kwargs``: the help's
    ``prog``, ``description`` and ``epilog``."""
    recipe = load_train_config(read_inputs(argv).config, config_class)
    inputs, values = _parse(config_class, argv, recipe, **kwargs)
    if values["output_dir"] is not None:
        raise DistillError("the output folder is --out (output_dir follows it): drop "
                           "--output_dir / output_dir")
    if not inputs.data or not inputs.out:
        raise DistillError(f"{kwargs.get('prog', 'distill train')} needs --data and --out (or "
                           "data/out in --config)")
    values["output_dir"] = inputs.out
    return inputs, config_class(**values)


def build_config(recipe: dict | None = None, args: list[str] | None = None, *,
                 config_class=None, **overrides) -> DistillSFTConfig:
    """Defaults < recipe fields < ``overrides`` < ``--name value`` args (any field of
    ``config_class``, default ``DistillSFTConfig``)."""
    config_class = config_class or DistillSFTConfig
    values = renamed_keys({**(recipe or {}), **overrides}, config_class)
    _, values = _parse(config_class, list(args or []), values)
    return config_class(**values)


def _parse(config_class, argv: list[str], defaults: dict, **kwargs) -> tuple[TrainInputs, dict]:
    """(inputs, ``config_class`` field values) of ``argv`` over ``defaults``."""
    names = {f.name for f in fields(TrainInputs)} | {f.name for f in fields(config_class)}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise DistillError(f"not {config_class.__name__} fields: {', '.join(unknown)}")
    parser = train_parser(config_class, **kwargs)
    parser.set_defaults(**defaults)
    try:
        namespace, rest = parser.parse_known_args(argv)
    except SystemExit as e:
        if e.code:
            raise DistillError("invalid training argument (see the message above)") from None
        raise  # --help
    if rest:
        raise DistillError(f"unknown training arguments: {' '.join(rest)} (see --help; flags "
                           "are never abbreviated)")
    values = vars(namespace)
    inputs = TrainInputs(**{f.name: values.pop(f.name) for f in fields(TrainInputs)})
    return inputs, values
