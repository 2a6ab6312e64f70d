"""The ``distill train sft`` job: data checks, then TRL training, resumable, then the student,
its tokenizer and a training card in the output folder."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from distill.data import DataOptions
from distill.errors import DistillError
from distill.folders import claim
from distill.log import log

RUN_FILE = "distill_sft.json"


@dataclass
class TrainInputs(DataOptions):
    """What a training run reads and writes, besides its config: ``distill train``'s flags and
    recipe keys next to the config fields; the data flags (``DataOptions``) apply to ``data``
    and ``eval_data``."""

    # Old field names (flags and recipe keys) still accepted, with a notice: old -> new.
    renamed_fields: ClassVar[dict[str, str]] = {"model": "student"}

    student: str | None = field(default=None, metadata={
        "help": "The student: HF folder or hub id; None: the embedded SmolLM2-135M-Instruct."})
    data: str | None = field(default=None, metadata={
        "help": "The training data: a dataset folder, a filter output (its kept/), a published "
        "or save_to_disk folder, Parquet/jsonl/json/csv files, a folder or glob of them, or a "
        "hub id; messages + completion, or a format mapped to it (see docs/dataset-format.md)."})
    out: str | None = field(default=None, metadata={
        "help": "Output folder: checkpoints, the student, its README.md card."})
    eval_data: str | None = field(default=None, metadata={
        "help": "Data to evaluate on (any --data form)."})
    config: str | None = field(default=None, metadata={
        "help": "Recipe YAML: config fields, plus student, data, out and eval_data; flags "
        "override it."})


def read_inputs(argv: list[str]) -> TrainInputs:
    """The ``TrainInputs`` flags of ``argv`` alone (the rest is left for the config), without
    importing transformers or trl (seconds): to check the data before they load."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for f in fields(TrainInputs):
        names = dict.fromkeys([f"--{f.name}", f"--{f.name.replace('_', '-')}"])
        if f.name == "field":
            parser.add_argument(*names, action="append", default=[])
        else:
            parser.add_argument(*names, default=f.default)
    return TrainInputs(**vars(parser.parse_known_args(argv)[0]))


@dataclass
class TrainResult:
    out: Path
    metrics: dict
    resumed_from: str | None
    data: dict

    def summary(self) -> str:
        m = self.metrics
        parts = [f"{self.out}: trained {m.get('global_step', '?')} steps"]
        if "train_loss" in m:
            parts.append(f"train loss {m['train_loss']:.4f}")
        if "eval_loss" in m:
            parts.append(f"eval loss {m['eval_loss']:.4f}")
        if m.get("train_tokens_per_second"):
            parts.append(f"{m['train_tokens_per_second']:.0f} tokens/s")
        if self.resumed_from:
            parts.append(f"resumed from {Path(self.resumed_from).name}")
        return ", ".join(parts) + f"\nstudent, tokenizer and training card in {self.out}"


def train_sft(model: str | None, data: str | Path, out: str | Path, config=None, *,
              eval_data: str | Path | None = None, data_options: dict | None = None,
              **overrides) -> TrainResult:
    """Fine-tune ``model`` (HF folder or hub id; None: the embedded SmolLM2-135M-Instruct) on the
    data ``data`` (anything ``distill.data.read`` takes, with ``data_options``: its split,
    subset, revision and fields); write the student to ``out``. ``config`` is a
    ``DistillSFTConfig`` (its ``output_dir`` is set to ``out``); ``overrides`` are config
    fields used to build one when it is None. Rerunning with ``out`` holding checkpoints of the
    same settings resumes from the last complete one."""
    from distill.sft.config import build_config
    from distill.sft.trainer import DistillSFTTrainer

    config = config or build_config(output_dir=str(out), **overrides)
    return fit(model, data, out, config, Method(DistillSFTTrainer), eval_data=eval_data,
               data_options=data_options)


@dataclass
class Examples:
    """A dataset's rows and their training sequences (``build_examples`` columns), both
    ``datasets.Dataset``, and the report of the checks."""

    rows: object
    columns: object
    report: object


class Method:
    """What one training method (sft, kd, onpolicy) adds to the shared job; ``sft`` adds nothing.
    Subclasses override the hooks; ``fit`` calls them in this order."""

    name = "sft"

    def __init__(self, trainer_class):
        self.trainer_class = trainer_class

    def prepare(self, tokenizer, model_path: str) -> None:
        """Check the inputs before any data is tokenized."""

    def examples(self, rows, tokenizer, config, verbose: bool):
        """(columns, report) of the training rows: ``build_examples``'s."""
        from distill.sft.data import build_examples

        return build_examples(rows, tokenizer, config, verbose=verbose)

    def datasets(self, train: Examples, eval: Examples | None):
        """(train, eval) ``datasets.Dataset`` the trainer gets."""
        return train.columns, None if eval is None else eval.columns

    def run_inputs(self) -> dict:
        """Inputs besides model and data that a resumed run must match."""
        return {}

    def trainer_kwargs(self) -> dict:
        return {}

    def card_lines(self) -> list[str]:
        return []


def fit(model: str | None, data: str | Path, out: str | Path, config, method: Method, *,
        eval_data: str | Path | None = None, data_options: dict | None = None) -> TrainResult:
    """The job every method shares: load and check the data, resume, train with
    ``method.trainer_class``, save the student and its card in ``out``."""
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from distill.models import resolve_model

    start = time.perf_counter()
    out = Path(out)
    config.output_dir = str(out)
    model_path = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as e:
        raise DistillError(f"cannot load the tokenizer of {model_path!r}: "
                           f"{str(e).splitlines()[0]}") from None
    check_pad_token(tokenizer)
    method.prepare(tokenizer, str(model_path))

    state = PartialState()
    owner = claim(out, f"train {method.name}", "train", marker=RUN_FILE,
                  inputs=[data, eval_data, model], overwrite=config.overwrite)
    with owner if state.is_main_process else nullcontext():
        return _fit(model, model_path, data, out, config, method, tokenizer, state, start,
                    eval_data, data_options)


def _fit(model, model_path, data, out: Path, config, method: Method, tokenizer, state, start,
         eval_data, data_options) -> TrainResult:
    from distill.sft.card import write_card
    from distill.sft.data import build_examples, load_rows

    with state.main_process_first():  # it tokenizes into the cache the other ranks read
        rows, manifest, folder = load_rows(data, data_options)
        columns, report = method.examples(rows, tokenizer, config,
                                          verbose=state.is_local_main_process)
        train = Examples(rows, columns, report)
        evaluation, eval_report = None, None
        if eval_data is not None:
            eval_rows, _, _ = load_rows(eval_data, data_options)
            eval_columns, eval_report = build_examples(eval_rows, tokenizer, config,
                                                       verbose=state.is_local_main_process)
            evaluation = Examples(eval_rows, eval_columns, eval_report)
        train_dataset, eval_dataset = method.datasets(train, evaluation)

    run = {"model": str(model_path), "data": str(folder), "data_sha256": data_fingerprint(columns),
           **method.run_inputs(),
           "settings": {k: _plain(getattr(config, k)) for k in config.resume_keys}}
    checkpoint = None
    if state.is_main_process:
        old = _read_run(out)
        checkpoint = _resume_point(out, run, config.restart)
        record = {"kind": "train", **run, "config": _config_dict(config)}
        final = _final_step(checkpoint, config)
        if final is not None and old.get("finished") == final:
            record["finished"] = final
        (out / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    state.wait_for_everyone()
    if not state.is_main_process:
        checkpoint = _last_complete_checkpoint(out)
    final = _final_step(checkpoint, config)
    if final is not None and _read_run(out).get("finished") == final:
        if state.is_main_process:
            log(f"{out}: already trained to its last step ({final}); nothing to do (--restart "
                "trains again from scratch, a larger --max_steps trains on)")
        metrics = _read_json(out / "metrics.json") or {"global_step": final}
        return TrainResult(out, metrics, None, report.to_dict())
    if checkpoint and state.is_main_process:
        log(f"{checkpoint} is the last step: finishing the student and its card, no training"
            if final is not None else f"resuming from {checkpoint}")

    trainer = method.trainer_class(
        model=str(model_path), args=config, train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer,
        peft_config=config.lora_config() if config.use_lora else None,
        **method.trainer_kwargs())
    if final is not None:  # stopped while saving the student or writing its card
        metrics = _load_final(trainer, checkpoint)
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(result.metrics, global_step=trainer.state.global_step)
        tokens = getattr(trainer, "_total_train_tokens", 0)  # TRL's count, this session's
        if tokens:
            metrics["train_tokens"] = tokens
            metrics["train_tokens_per_second"] = tokens / max(result.metrics["train_runtime"],
                                                              1e-9)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    _save(trainer, out, config)
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(str(out / "trainer_state.json"))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_card(out, model=str(model if model else model_path), data=folder,
                   manifest=manifest, config=config, report=report, eval_report=eval_report,
                   metrics=metrics, log_history=trainer.state.log_history,
                   seconds=time.perf_counter() - start, resumed_from=checkpoint,
                   command=f"distill train {method.name}", objective=method.card_lines())
        record = _read_run(out)
        (out / RUN_FILE).write_text(json.dumps({**record, "finished": metrics["global_step"]},
                                               indent=2, default=str) + "\n")
    return TrainResult(out, metrics, checkpoint, report.to_dict())


def _load_final(trainer, checkpoint: str) -> dict:
    """Load the last checkpoint's weights and state into ``trainer``; its training metrics."""
    from transformers.trainer_callback import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    last = next((h for h in reversed(trainer.state.log_history) if "train_loss" in h), {})
    return dict(last, global_step=trainer.state.global_step)


def _final_step(checkpoint: str | None, config) -> int | None:
    """The checkpoint's step when it is the run's last one (``config.max_steps`` or, without
    it, the step count the run planned), else None."""
    if checkpoint is None:
        return None
    saved = _read_json(Path(checkpoint) / "trainer_state.json") or {}
    step = saved.get("global_step", 0)
    last = config.max_steps if config.max_steps > 0 else saved.get("max_steps", 0)
    return step if 0 < last <= step else None


def _read_run(out: Path) -> dict:
    return _read_json(out / RUN_FILE) or {}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _save(trainer, out: Path, config) -> None:
    """The student (merged when LoRA), its tokenizer; the adapter in out/adapter."""
    if not config.use_lora:
        trainer.save_model(str(out))
        return
    trainer.save_model(str(out / "adapter"))
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
        log("LoRA on sharded weights (FSDP, ZeRO-3): saved the adapter only; merge it with "
             "peft's merge_and_unload on one machine")
        return
    if config.merge_lora and trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(out))
        trainer.processing_class.save_pretrained(str(out))


def check_pad_token(tokenizer) -> None:
    """A tokenizer without a pad token gets one, said out loud. Labels are padded with -100 on
    their own (never derived from pad ids), so a pad token equal to end-of-turn is safe."""
    if tokenizer.pad_token is not None:
        return
    pick = tokenizer.unk_token or tokenizer.eos_token
    if pick is None:
        raise DistillError("the tokenizer has neither a pad, unk nor eos token: set one")
    tokenizer.pad_token = pick
    log(f"warning: the tokenizer has no pad token; padding with {pick!r} "
         f"(id {tokenizer.pad_token_id}); labels are padded with -100, so this token still "
         "trains where it is part of a completion")


def _resume_point(out: Path, run: dict, restart: bool) -> str | None:
    """The checkpoint to resume from, after checking the run is the same (a larger
    ``max_steps`` trains on); or None."""
    checkpoints = sorted(out.glob("checkpoint-*"), key=_step) if out.is_dir() else []
    if restart:
        for c in checkpoints:
            shutil.rmtree(c)
        if checkpoints:
            log(f"restart: deleted {len(checkpoints)} checkpoints in {out}; training from scratch")
        return None
    for c in checkpoints:
        if not _complete(c):  # killed while saving: trainer_state.json is written last
            log(f"removing incomplete {c.name} (the run was stopped while saving it)")
            shutil.rmtree(c)
    last = _last_complete_checkpoint(out)
    if last is None:
        return None
    old = _read_run(out).get("settings", {})
    if old:
        changed = [k for k in run if k not in ("settings", "kind") and
                   _read_run(out).get(k) != run[k]]
        changed += [k for k in run["settings"] if old.get(k) != run["settings"][k]]
        then, now = old.get("max_steps") or 0, run["settings"].get("max_steps") or 0
        if changed == ["max_steps"] and 0 < then < now:
            log(f"max_steps {then} -> {now}: training on from {Path(last).name}")
            changed = []
        if changed:
            raise DistillError(f"{out} holds checkpoints of a run with other settings "
                               f"({', '.join(changed)} changed); rerun with --restart to start "
                               "over, or pick another --out")
    return last


def _last_complete_checkpoint(out: Path) -> str | None:
    done = [c for c in out.glob("checkpoint-*") if _complete(c)] if out.is_dir() else []
    return str(max(done, key=_step)) if done else None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def _step(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def data_fingerprint(columns) -> str:
    """sha256 of the training sequences (``build_examples`` columns), read in batches."""
    import numpy as np

    h = hashlib.sha256()
    for name in ("input_ids", "labels", "span_ids"):
        for seq in columns[name]:
            h.update(np.asarray(seq, dtype=np.int64).tobytes())
            h.update(b"|")
    return h.hexdigest()


def _plain(value):
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _config_dict(config) -> dict:
    return {k: _plain(v) for k, v in config.to_dict().items()}

