"""``DistillKDConfig``: ``DistillSFTConfig`` plus the teacher and the logit-distillation loss.

The same recipes, masks and span weights as ``distill train sft``; the per-token loss becomes
``alpha * kd_t + (1 - alpha) * ce_t`` (see ``distill.sft.kd.losses``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from distill.errors import DistillError
from distill.sft.config import RESUME_KEY, DistillSFTConfig, added_fields
from distill.sft.kd.losses import LOSSES, check_kd_options
from distill.sft.kd.schedules import ALPHA_SCHEDULES, TEMPERATURE_SCHEDULES, check_schedule
from distill.sft.kd.teacher import TEACHER_DTYPES


@dataclass
class DistillKDConfig(DistillSFTConfig):
    r"""Config of ``distill train kd``: every ``DistillSFTConfig`` field, plus the teacher
    (online: a model run next to the student; offline: a ``distill logits capture`` folder)
    and the loss."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "temperature": "kd_temperature", "temperature_end": "kd_temperature_end",
        "temperature_schedule": "kd_temperature_schedule"}

    teacher: str | None = field(default=None, metadata={
        "help": "Teacher model (HF folder or hub id), run frozen next to the student. It must "
        "use the student's tokenizer (padded vocabulary sizes may differ), unless loss is "
        "'uld'."})
    teachers: str | None = field(default=None, metadata={
        "help": "Several online teachers, comma-separated (instead of teacher): the target is "
        "the mixture sum_i w_i softmax(z_i / T) of their distributions. All must use the "
        "student's tokenizer."})
    teacher_aggregation: str = field(default="average", metadata={
        "help": "Mixing weights of teachers: 'average' (1/n), 'fixed' (teacher_weights, "
        "normalized to sum 1) or 'learned' (softmax of a parameter trained with the KD loss; "
        "it moves weight onto the teachers the student already agrees with). Saved to "
        "teacher_weights.json.", "choices": ["average", "fixed", "learned"]})
    teacher_weights: str | None = field(default=None, metadata={
        "help": "Weights of teachers for aggregation 'fixed', comma-separated, e.g. '0.7,0.3'."})
    offline_logits: str | None = field(default=None, metadata={
        "help": "Folder written by `distill logits capture` for this dataset, or the output of "
        "`distill generate --logprobs K` the data comes from (or a filter or publish output of "
        "it; one pass: the generated tokens and their top-k, under the teacher's own prompt): "
        "train from the teacher's stored top-k log-probs instead of running the teacher."})
    loss: str = field(default="forward_kl", metadata={
        "help": "Divergence between teacher and student token distributions; 'uld' (sorted "
        "probabilities, no shared ids) also distills from a teacher with another tokenizer.",
        "choices": list(LOSSES)})
    kd_temperature: float = field(default=1.0, metadata={
        "help": "Softmax temperature of both distributions in the KD term (the term is scaled "
        "by T^2); the CE term always uses T=1."})
    kd_temperature_end: float | None = field(default=None, metadata={
        "help": "Final temperature of a temperature schedule; None: kd_temperature."})
    kd_temperature_schedule: str = field(default="constant", metadata={
        "help": "How the temperature moves from kd_temperature to kd_temperature_end over "
        "training.",
        "choices": list(TEMPERATURE_SCHEDULES)})
    alpha: float = field(default=0.5, metadata={
        "help": "Share of the KD term: loss = alpha * kd + (1 - alpha) * ce (1: pure KD)."})
    alpha_end: float | None = field(default=None, metadata={
        "help": "Final alpha of an alpha schedule; None: alpha."})
    alpha_schedule: str = field(default="constant", metadata={
        "help": "How alpha moves from alpha to alpha_end over training.",
        "choices": list(ALPHA_SCHEDULES)})
    schedule_warmup_steps: int = field(default=0, metadata={
        "help": "Steps of the 'warmup' and 'warmup_decay' schedules' first phase."})
    beta: float = field(default=0.5, metadata={
        "help": "jsd: mixture weight of the teacher (0: forward KL, 1: reverse KL); "
        "bidirectional: weight of the reverse KL."})
    top_k: int | None = field(default=None, metadata={
        "help": "Use only the teacher's k most likely tokens per position (needed by loss "
        "'topk' with an online teacher; with offline logits, at most the cached k)."})
    entropy_threshold: float | None = field(default=None, metadata={
        "help": "Count the KD term only where the teacher's entropy (nats) exceeds this."})
    kd_chunk_size: int = field(default=512, metadata={
        "help": "Tokens per chunk of the KD loss: lower it if the (chunk, vocab) logits do not "
        "fit in memory."})
    teacher_dtype: str = field(default="auto", metadata={
        "help": "dtype the online teacher is loaded in ('auto': its checkpoint's).",
        "choices": list(TEACHER_DTYPES)})
    teacher_device: str | None = field(default=None, metadata={
        "help": "Device of the online teacher, e.g. 'cuda:1'; None: the student's."})
    # Feature and attention transfer (online teacher; see distill.sft.kd.transfer)
    feature_weight: float = field(default=0.0, metadata={
        "help": "Weight of the hidden-state (FitNets) term added to the loss; 0: off."})
    feature_layers: str | None = field(default=None, metadata={
        "help": "Student block -> teacher block pairs for the feature term, e.g. '0:3,1:7'; "
        "None or 'uniform': every student block, to teacher blocks spread first to last."})
    feature_loss: str = field(default="mse", metadata={
        "help": "Per-token distance of the feature term.", "choices": ["mse", "cosine"]})
    feature_projector: str = field(default="linear", metadata={
        "help": "Learned map from the student's hidden size to the teacher's (none when equal).",
        "choices": ["linear", "mlp"]})
    attention_weight: float = field(default=0.0, metadata={
        "help": "Weight of the attention-map term added to the loss; 0: off. Runs both models "
        "with eager attention."})
    attention_layers: str | None = field(default=None, metadata={
        "help": "Student block -> teacher block pairs for the attention term; None: "
        "'uniform'."})
    attention_loss: str = field(default="kl", metadata={
        "help": "'kl': KL(teacher row || student row) per query; 'mse' over the maps.",
        "choices": ["kl", "mse"]})
    # Self-distillation and deep supervision (see distill.sft.kd.transfer)
    self_distill_decay: float | None = field(default=None, metadata={
        "help": "Self-distillation instead of a teacher: the teacher is an exponential moving "
        "average of the student with this decay (e.g. 0.999), updated after every optimizer "
        "step."})
    deep_supervision_weight: float = field(default=0.0, metadata={
        "help": "Weight of the deep-supervision term: intermediate student blocks, through the "
        "final norm and LM head, learn the teacher's distribution too (the KD term at alpha 1); "
        "0: off."})
    deep_supervision_layers: str | None = field(default=None, metadata={
        "help": "Student blocks of the deep-supervision term, e.g. '3,7'; None: every "
        "intermediate block."})

    def __post_init__(self):
        super().__post_init__()
        if sum(x is not None for x in (self.teacher, self.teachers, self.offline_logits,
                                       self.self_distill_decay)) != 1:
            raise DistillError("distill train kd needs exactly one teacher: --teacher MODEL "
                               "(online), --teachers M1,M2 (a mixture), --offline-logits DIR "
                               "(from distill logits capture) or --self-distill-decay D (the "
                               "student's moving average)")
        self._check_teachers()
        check_kd_options(self.loss, self.kd_temperature, self.alpha, self.beta, self.top_k,
                         self.kd_chunk_size)
        from distill.sft.kd.transfer import check_transfer_options

        check_transfer_options(self)
        check_kd_options(temperature=self.kd_temperature if self.kd_temperature_end is None
                         else self.kd_temperature_end,
                         alpha=self.alpha if self.alpha_end is None else self.alpha_end)
        check_schedule(self.kd_temperature_schedule, TEMPERATURE_SCHEDULES,
                       "kd_temperature_schedule")
        check_schedule(self.alpha_schedule, ALPHA_SCHEDULES, "alpha_schedule")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise DistillError(f"teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}")
        if self.loss == "topk" and (self.teacher or self.teachers) and self.top_k is None:
            raise DistillError("loss 'topk' with an online teacher needs --top_k K")
        if self.loss == "uld" and self.teachers is not None:
            raise DistillError("loss 'uld' takes one teacher: --teacher or --offline-logits, "
                               "not --teachers")
        if self.schedule_warmup_steps < 0:
            raise DistillError("schedule_warmup_steps must be >= 0")
        if self.loss_type != "nll" or self.label_smoothing_factor > 0:
            raise DistillError("distill train kd has its own loss: leave loss_type at 'nll' and "
                               "label_smoothing_factor at 0")

    def teacher_list(self) -> list[str]:
        """The --teachers models (empty without them)."""
        return [t.strip() for t in (self.teachers or "").split(",") if t.strip()]

    def weight_list(self) -> list[float] | None:
        """The --teacher-weights numbers (None without them)."""
        if self.teacher_weights is None:
            return None
        try:
            return [float(w) for w in str(self.teacher_weights).split(",")]
        except ValueError:
            raise DistillError(f"teacher_weights must be comma-separated numbers, got "
                               f"{self.teacher_weights!r}") from None

    def _check_teachers(self) -> None:
        if self.teachers is None:
            if self.teacher_weights is not None or self.teacher_aggregation != "average":
                raise DistillError("teacher_weights and teacher_aggregation go with --teachers")
            return
        from distill.sft.kd.multi_teacher import TeacherMixture

        names = self.teacher_list()
        if len(names) < 2:
            raise DistillError(f"--teachers needs at least two models, got {self.teachers!r} "
                               "(one teacher: --teacher)")
        TeacherMixture(len(names), self.teacher_aggregation, self.weight_list())  # checks
        if self.feature_weight > 0 or self.attention_weight > 0:
            raise DistillError("feature and attention transfer need one teacher: drop "
                               "--teachers or the feature/attention weights")
        if self.teacher_aggregation == "learned" and (self.loss == "topk" or self.top_k):
            raise DistillError("teacher_aggregation 'learned' does not support loss 'topk' or "
                               "top_k (the top-k cut has no gradient)")

    def schedule(self, step: int, total_steps: int) -> tuple[float, float]:
        """(temperature, alpha) at optimizer step ``step`` of ``total_steps``."""
        from distill.sft.kd.schedules import schedule_value

        t_end = self.kd_temperature if self.kd_temperature_end is None else self.kd_temperature_end
        a_end = self.alpha if self.alpha_end is None else self.alpha_end
        warmup = self.schedule_warmup_steps
        return (schedule_value(self.kd_temperature_schedule, self.kd_temperature, t_end, step,
                               total_steps, warmup),
                schedule_value(self.alpha_schedule, self.alpha, a_end, step, total_steps, warmup))


# A resumed run must match every KD field but those that only say where and in what chunks
# the loss runs.
DistillKDConfig.resume_keys = RESUME_KEY + tuple(
    k for k in added_fields(DistillKDConfig) if k not in ("kd_chunk_size", "teacher_device"))
