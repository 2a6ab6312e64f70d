"""The ``distill train kd`` job: ``distill train sft``'s job (data checks, resume, student and
card) with a teacher: online (a model loaded next to the student) or offline (a ``distill
logits capture`` folder joined to the training sequences)."""

from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError
from distill.sft.train import Examples, Method, TrainResult, fit


def train_kd(model: str | None, data: str | Path, out: str | Path, config=None, *,
             eval_data: str | Path | None = None, data_options: dict | None = None,
             **overrides) -> TrainResult:
    """Distill into the student ``model`` on the dataset folder ``data``; write it to ``out``.
    ``config`` is a ``DistillKDConfig`` (``teacher`` or ``offline_logits`` set); ``overrides``
    are its fields, used to build one when it is None. Resumes like ``train_sft``."""
    from distill.sft.config import build_config
    from distill.sft.kd.config import DistillKDConfig

    config = config or build_config(config_class=DistillKDConfig, output_dir=str(out),
                                    **overrides)
    return fit(model, data, out, config, KDMethod(config), eval_data=eval_data,
               data_options=data_options)


class KDMethod(Method):
    name = "kd"

    def __init__(self, config):
        from distill.sft.kd.trainer import DistillKDTrainer
        from distill.sft.kd.transfer import TransferKDTrainer, has_extra_terms

        super().__init__(TransferKDTrainer if has_extra_terms(config) else DistillKDTrainer)
        self.config = config
        self.capture = None  # manifest of the offline logits
        self.generation = None  # or the generation they come from (one pass)
        self.topk = None  # the generation's top-k columns of the training sequences
        self.vocab_size = None  # shared by the generation's model and the student
        self.teacher_tokenizer = None
        self.cross = False  # the teacher has another tokenizer (loss uld)

    def prepare(self, tokenizer, model_path: str) -> None:
        from transformers import AutoConfig

        from distill.sft.kd.teacher import (
            check_same_tokenizer,
            load_tokenizer,
            shared_vocab,
            vocab_rows,
        )

        self.tokenizer = tokenizer
        student_rows = vocab_rows(AutoConfig.from_pretrained(model_path))
        if self.config.offline_logits is not None:
            from distill.sft.kd.capture import is_capture, read_capture

            if not is_capture(self.config.offline_logits):
                from distill.sft.kd.generated import Generation

                self.generation = Generation.read(self.config.offline_logits)
                self.generation.check_top_k(self.config.top_k)
                self.vocab_size = self.generation.check_tokenizer(tokenizer, model_path)
                return
            self.capture = read_capture(self.config.offline_logits)
            k = self.capture["top_k"]
            if self.config.top_k is not None and self.config.top_k > k:
                raise DistillError(f"top_k {self.config.top_k} > the {k} log-probs per token "
                                   f"cached in {self.config.offline_logits}")
            if self._captured_on_another_tokenizer(tokenizer, model_path):
                return
            if self.capture["vocab_size"] > student_rows:
                raise DistillError(f"{self.config.offline_logits}: captured over "
                                   f"{self.capture['vocab_size']} ids, more than the student's "
                                   f"{student_rows} vocabulary rows")
            return
        for teacher in self.config.teacher_list() or [self.config.teacher]:
            if teacher is None:  # self-distillation: the student's own moving average
                return
            self.teacher_tokenizer = load_tokenizer(teacher, "teacher")
            if self.config.loss == "uld" and self.config.teachers is None and \
                    self.teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
                from distill.sft.kd.cross import check_cross_options

                check_cross_options(self.config)
                self.cross = True
                return
            check_same_tokenizer(tokenizer, self.teacher_tokenizer, model_path, teacher)
            shared_vocab(student_rows, vocab_rows(AutoConfig.from_pretrained(teacher)),
                         tokenizer, teacher)

    def _captured_on_another_tokenizer(self, tokenizer, model_path: str) -> bool:
        """True when the capture holds the teacher's own tokenization (then it needs loss uld
        and the teacher's tokenizer, which must be the one captured with)."""
        from distill.sft.kd.capture import tokenizer_fingerprint
        from distill.sft.kd.teacher import SEQUENCE_ROUTE, load_tokenizer

        captured, folder = self.capture["tokenizer"], self.config.offline_logits
        if captured["vocab_sha256"] == tokenizer_fingerprint(tokenizer)["vocab_sha256"]:
            return False
        if self.config.loss != "uld":
            raise DistillError(f"{folder}: captured on the tokenizer of {captured['name']}, not "
                               f"the student's ({model_path}): only --loss uld distills across "
                               f"tokenizers (it compares sorted probabilities), or "
                               f"{SEQUENCE_ROUTE}")
        self.teacher_tokenizer = load_tokenizer(self.capture["teacher"], "teacher")
        if tokenizer_fingerprint(self.teacher_tokenizer)["vocab_sha256"] != \
                captured["vocab_sha256"]:
            raise DistillError(f"{folder}: captured on another tokenizer than the teacher's "
                               f"({self.capture['teacher']}) or the student's ({model_path}) "
                               "now: capture again")
        self.cross = True
        return True

    def examples(self, rows, tokenizer, config, verbose: bool):
        if self.generation is None:
            return super().examples(rows, tokenizer, config, verbose)
        from distill.sft.kd.generated import build_examples

        columns, report, *self.topk = build_examples(rows, tokenizer, config, self.generation,
                                                     verbose=verbose)
        return columns, report

    def datasets(self, train: Examples, eval: Examples | None):
        if self.capture is None and self.cross:
            from distill.sft.kd.cross import with_teacher_sequences

            def add(examples):
                return with_teacher_sequences(examples, self.teacher_tokenizer, self.config,
                                              self.config.teacher)

            return add(train), None if eval is None else add(eval)
        if self.capture is None and self.generation is None:
            return super().datasets(train, eval)
        if eval is not None:
            raise DistillError("eval_data needs the teacher, and offline logits cover the "
                               "training data only: train with --teacher to evaluate the KD "
                               "loss, or evaluate the student with distill eval")
        from datasets import Dataset
        from datasets.table import InMemoryTable

        from distill.sft.kd.capture import load_topk
        from distill.sft.kd.trainer import TOPK_IDS, TOPK_LOGPROBS

        if self.generation is not None:
            ids, logprobs = self.topk
        elif self.cross:
            from distill.sft.kd.cross import cross_topk

            ids, logprobs = cross_topk(train, self.config.offline_logits, self.teacher_tokenizer,
                                       self.config, self.capture)
        else:
            ids, logprobs, _ = load_topk(self.config.offline_logits, self.tokenizer,
                                         train.columns, train.rows, train.report)
        table = pa_table(train.columns).append_column(TOPK_IDS, ids).append_column(
            TOPK_LOGPROBS, logprobs)
        return Dataset(InMemoryTable(table)), None

    def run_inputs(self) -> dict:
        if self.generation is not None:
            return {"logits_teacher": self.generation.model, "logits_top_k": self.generation.top_k}
        if self.capture is None:
            return {}
        return {"logits_sha256": self.capture["data_sha256"], "logits_teacher":
                self.capture["teacher"], "logits_top_k": self.capture["top_k"]}

    def trainer_kwargs(self) -> dict:
        if self.generation is not None:
            return {"vocab_size": self.vocab_size}
        if self.capture is not None:
            return {"vocab_size": self.capture["vocab_size"]}
        c = self.config
        if c.teacher is None and c.teachers is None:  # self-distillation: the trainer makes
            return {}  # the EMA copy
        from accelerate import PartialState

        from distill.sft.kd.teacher import check_plain_head, load_teacher

        models = []
        for name in c.teacher_list() or [c.teacher]:
            models.append(load_teacher(name, c.teacher_dtype, c.teacher_device or
                                       PartialState().device))
            check_plain_head(models[-1], f"teacher {name}")
        return {"teacher": models if c.teachers else models[0]}

    def card_lines(self) -> list[str]:
        c = self.config
        if self.generation is not None:
            source = (f"one pass: top-{self.generation.top_k} log-probs of "
                      f"`{self.generation.model}` stored by distill generate in "
                      f"`{c.offline_logits}`, on its generated tokens")
        elif self.capture is not None:
            source = (f"offline: top-{self.capture['top_k']} log-probs of "
                      f"`{self.capture['teacher']}` from `{c.offline_logits}`")
        elif c.teachers is not None:
            weights = ("learned (softmax of a trained parameter; final weights in "
                       "`teacher_weights.json`)" if c.teacher_aggregation == "learned" else
                       "average" if c.teacher_aggregation == "average" else
                       f"fixed {c.teacher_weights} (normalized)")
            source = (f"online mixture of {', '.join(f'`{t}`' for t in c.teacher_list())} "
                      f"({c.teacher_dtype}), weights {weights}")
        elif c.teacher is None:
            source = f"the student's moving average (EMA decay {c.self_distill_decay:g})"
        else:
            source = f"online: `{c.teacher}` ({c.teacher_dtype})"
        lines = [f"- teacher: {source}",
                 f"- KD loss: `{c.loss}`, loss = alpha * kd + (1 - alpha) * ce per token",
                 _schedule_line("temperature", c.kd_temperature, c.kd_temperature_end,
                                c.kd_temperature_schedule),
                 _schedule_line("alpha", c.alpha, c.alpha_end, c.alpha_schedule)]
        if c.loss in ("jsd", "bidirectional"):
            lines.append(f"- beta: {c.beta:g}")
        if c.top_k is not None:
            lines.append(f"- teacher top-k: {c.top_k}")
        if self.cross:
            lines.append("- the teacher has another tokenizer: its completion tokens are paired "
                         "with the student's by position, truncated to the shorter (ULD)")
        if c.entropy_threshold is not None:
            lines.append(f"- KD only where the teacher's entropy > {c.entropy_threshold:g} nats")
        from distill.sft.kd.transfer import transfer_card_lines

        return lines + transfer_card_lines(c)


def pa_table(columns):
    """The ``build_examples`` columns (a Dataset) as an Arrow table."""
    from distill.sft.data import COLUMNS

    return columns.flatten_indices().data.table.select(list(COLUMNS))


def _schedule_line(name: str, start: float, end: float | None, kind: str) -> str:
    if kind == "constant" or end is None:
        return f"- {name}: {start:g}"
    return f"- {name}: {start:g} -> {end:g} ({kind})"
