"""Offline teacher logits: the teacher's top-k log-probs for every counted token of a dataset,
captured once and stored beside it, so the teacher need not sit in memory during training.

``capture_logits`` tokenizes the dataset exactly as training does (``build_examples`` with the
same settings and the student's tokenizer), runs the teacher (backend ``hf``: a forward pass,
no grad, batched, logits only where a token counts; ``vllm``: the engine's prompt log-probs of
the whole sequences, a shard per call, see ``distill.sft.kd.vllm_teacher``), and writes, per
training sequence, the k ids (int32) and
log-probs (float16, at temperature 1, normalized over the shared vocabulary) of each counted
token: 6·k bytes per token before Parquet's compression. The folder is a distill dataset
(``data/part-*.parquet`` + ``manifest.json``); shards are atomic, and a rerun skips the
sequences already captured.

``load_topk`` reads a capture back for training: it checks the cache belongs to the training
sequences (same tokenizer, same sequences: a fingerprint of their ids and labels; same row
ids and token counts per sequence) and returns the per-token columns ``DistillKDTrainer``
collates.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill import io
from distill.errors import DistillError
from distill.folders import claim
from distill.log import log

KIND = "logits"
BACKENDS = ("hf", "vllm")
SCHEMA = pa.schema([("example", pa.int64()), ("row", pa.int64()), ("id", pa.string()),
                    ("tokens", pa.int32()), ("ids", pa.list_(pa.int32())),
                    ("logprobs", pa.list_(pa.float16()))])
BYTES_PER_ENTRY = 4 + 2  # int32 id + float16 log-prob
# Settings that shape the training sequences (recorded, named when a cache does not match).
DATA_KEYS = ("max_length", "objective", "reasoning_weight", "answer_weight",
             "step_by_step_alpha", "label_prefix", "rationale_prefix", "answer_span_field",
             "on_truncated", "on_bad_row")


@dataclass
class CaptureResult:
    out: Path
    examples: int
    captured: int  # examples captured by this call (the rest were there already)
    tokens: int
    top_k: int
    disk_bytes: int
    seconds: float

    @property
    def bytes_per_token(self) -> float:
        """On disk (Parquet, compressed), all columns and metadata included."""
        return self.disk_bytes / max(self.tokens, 1)

    def summary(self) -> str:
        skipped = self.examples - self.captured
        return (f"{self.out}: top-{self.top_k} teacher log-probs of {self.tokens} tokens in "
                f"{self.examples} sequences ({self.captured} captured now"
                + (f", {skipped} already there" if skipped else "") + f", {self.seconds:.1f}s); "
                f"{BYTES_PER_ENTRY * self.top_k} bytes/token of payload (6·k), "
                f"{self.bytes_per_token:.1f} bytes/token on disk")


def capture_logits(teacher: str, data: str | Path, out: str | Path, top_k: int, *,
                   student: str | None = None, config=None, batch_size: int = 8,
                   dtype: str = "auto", device: str | None = None, shard_size: int = 512,
                   restart: bool = False, data_options: dict | None = None,
                   overwrite: bool = False, backend: str = "hf",
                   engine=None) -> CaptureResult:
    """Capture ``teacher``'s top-``top_k`` log-probs for the counted tokens of ``data``
    (anything ``distill train`` reads, with ``data_options``) into ``out``. ``student``: the
    model to train (its tokenizer builds the
    sequences when it is the teacher's; its vocabulary size bounds the shared one; another
    tokenizer leaves the teacher's own sequences, for ``--loss uld``); default: the teacher's
    tokenizer. ``config``: a ``DistillSFTConfig`` with the training run's data
    settings (max_length, objective, weights, ...). ``out``: new, empty or a capture
    (``overwrite``: move what else it holds aside). ``backend``: ``hf`` or ``vllm``
    (``engine``: a ``VLLMTeacher`` of ``teacher`` to use, else one is started and stopped)."""
    from distill.sft.config import build_config
    from distill.sft.data import build_examples, load_rows, row_ids
    from distill.sft.kd.teacher import load_teacher, load_tokenizer, vocab_rows
    from distill.sft.train import check_pad_token, data_fingerprint

    start = time.perf_counter()
    if top_k < 1:
        raise DistillError(f"--top-k must be >= 1, got {top_k}")
    if backend not in BACKENDS:
        raise DistillError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    out = Path(out)
    inputs = [data, teacher, student]
    with claim(out, "logits capture", KIND, inputs=inputs, overwrite=overwrite, mark=False):
        config = config or build_config(output_dir=str(out))
        tokenizer = load_tokenizer(teacher, "teacher")
        student_rows = None
        if student is not None:
            from transformers import AutoConfig

            student_tokenizer = load_tokenizer(student, "student")
            if student_tokenizer.get_vocab() == tokenizer.get_vocab():
                tokenizer = student_tokenizer
                student_rows = vocab_rows(AutoConfig.from_pretrained(student))
            else:  # kept on the teacher's own tokenization, for train kd --loss uld
                log(f"logits: the student {student} has another tokenizer than the teacher: "
                    "capturing the teacher's own sequences and vocabulary (distill train kd "
                    "--loss uld reads them)")
        check_pad_token(tokenizer)
        rows, source_manifest, folder = load_rows(data, data_options)
        columns, report = build_examples(rows, tokenizer, config)
        if backend == "hf":
            model = load_teacher(teacher, dtype, device)
            teacher_rows = vocab_rows(model)
        else:
            from transformers import AutoConfig

            teacher_rows = vocab_rows(AutoConfig.from_pretrained(teacher))
        vocab = min(teacher_rows, student_rows or len(tokenizer))
        if top_k > vocab:
            raise DistillError(f"--top-k {top_k} is larger than the vocabulary ({vocab})")
        labels = [np.asarray(x) for x in columns["labels"]]
        counted = [int((x[1:] != -100).sum()) for x in labels]
        manifest = {
            "kind": KIND, "created": io.now(), "input": str(folder),
            "input_manifest": source_manifest, "teacher": teacher, "student": student,
            "backend": backend,
            "top_k": top_k, "vocab_size": vocab, "tokenizer": tokenizer_fingerprint(tokenizer),
            "data_sha256": data_fingerprint(columns),
            "settings": {k: getattr(config, k) for k in DATA_KEYS}, "rows": len(rows),
            "examples": len(labels), "tokens": sum(counted), "complete": False,
            "versions": io.package_versions(("distill", "torch", "transformers", "pyarrow"))}
        _prepare_folder(out, manifest, restart)
        done = io.read_ids(out, "example")
        todo = [e for e in range(len(labels)) if e not in done]
        writer = io.ShardWriter(out, SCHEMA)
        ids_of = row_ids(rows, report.example_rows)
        own_engine = backend == "vllm" and engine is None and bool(todo)
        if own_engine:
            from distill.sft.kd.vllm_teacher import VLLMTeacher

            longest = max(len(labels[e]) for e in todo)  # + the one token vllm samples
            engine = VLLMTeacher(teacher, top_k, dtype=dtype, max_model_len=longest + 1)
        try:
            for lo in range(0, len(todo), shard_size):
                part = sorted(todo[lo:lo + shard_size], key=lambda e: len(labels[e]))
                records = []
                step = batch_size if backend == "hf" else len(part)  # vllm schedules a shard
                for b in range(0, len(part), step):
                    batch = part[b:b + step]
                    seqs = ([columns["input_ids"][e] for e in batch], [labels[e] for e in batch])
                    topk = (_teacher_topk(model, *seqs, top_k, vocab, tokenizer.pad_token_id)
                            if backend == "hf" else engine.topk(*seqs, top_k, vocab))
                    for e, (ids, logprobs) in zip(batch, topk):
                        records.append({"example": e, "row": report.example_rows[e],
                                        "id": ids_of[e], "tokens": counted[e],
                                        "ids": ids.reshape(-1),
                                        "logprobs": logprobs.reshape(-1)})
                writer.write(records)
                log(f"logits: {len(done) + lo + len(part)}/{len(labels)} sequences")
        finally:
            writer.close()
            if own_engine:
                engine.close()
        disk = sum(p.stat().st_size for p in io.shard_paths(out))
        io.write_manifest(out, {**manifest, "complete": True, "disk_bytes": disk,
                                "bytes_per_token": disk / max(sum(counted), 1),
                                "payload_bytes_per_token": BYTES_PER_ENTRY * top_k})
        return CaptureResult(out, len(labels), len(todo), sum(counted), top_k, disk,
                             time.perf_counter() - start)


def _teacher_topk(model, input_ids: list, labels: list, top_k: int, vocab: int, pad_id: int):
    """Per sequence: (ids int32 (n, k), log-probs float16 (n, k)) of its n counted tokens."""
    import torch

    device = model.device
    width = max(len(x) for x in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(input_ids), width - 1), dtype=torch.bool)
    for i, (x, y) in enumerate(zip(input_ids, labels)):
        ids[i, :len(x)] = torch.as_tensor(x)
        attention[i, :len(x)] = 1
        mask[i, :len(x) - 1] = torch.as_tensor(y[1:] != -100)
    keep = mask.any(0).nonzero().squeeze(1)  # positions some sequence needs
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                       logits_to_keep=keep.to(device), use_cache=False).logits
    out = []
    for i in range(len(input_ids)):
        rows = logits[i][mask[i, keep].to(device)][:, :vocab].float().log_softmax(-1)
        values, indices = rows.topk(top_k, dim=-1)
        out.append((indices.to(torch.int32).cpu().numpy(),
                    values.to(torch.float16).cpu().numpy()))
    return out


def tokenizer_fingerprint(tokenizer) -> dict:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"name": tokenizer.name_or_path, "tokens": len(tokenizer),
            "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest()}


def is_capture(folder: str | Path) -> bool:
    """Whether ``folder`` is a ``distill logits capture`` output (else: maybe a generation)."""
    return (io.read_manifest(Path(folder)) or {}).get("kind") == KIND


def read_capture(folder: str | Path) -> dict:
    """The manifest of a finished capture, or a DistillError saying what is wrong."""
    folder = Path(folder)
    manifest = io.read_manifest(folder)
    if manifest is None or manifest.get("kind") != KIND:
        raise DistillError(f"{folder}: not a distill logits capture (no manifest.json of kind "
                           f"'{KIND}'); make one with distill logits capture")
    if not manifest.get("complete"):
        raise DistillError(f"{folder}: the capture did not finish; rerun the same distill "
                           "logits capture command to complete it")
    return manifest


def load_topk(folder: str | Path, tokenizer, columns, rows, report):
    """Per-token columns of cached top-k ids and log-probs for the training sequences
    ``columns`` (from ``build_examples``): one list per token, k entries where the token's
    label counts, none elsewhere. Returns (ids column, log-probs column, manifest)."""
    import pyarrow.parquet as pq

    from distill.sft.data import row_ids
    from distill.sft.train import data_fingerprint

    folder = Path(folder)
    manifest = read_capture(folder)
    mine = tokenizer_fingerprint(tokenizer)
    if manifest["tokenizer"]["vocab_sha256"] != mine["vocab_sha256"]:
        raise DistillError(f"{folder}: captured with the tokenizer of "
                           f"{manifest['tokenizer']['name']}, not the student's ({mine['name']})")
    if manifest["data_sha256"] != data_fingerprint(columns):
        raise DistillError(
            f"{folder}: captured for other training sequences than these ({len(columns['labels'])}"
            f" sequences now, {manifest['examples']} captured from {manifest['input']} with "
            f"{json.dumps(manifest['settings'])}): capture again with this dataset and the "
            "training run's settings (max_length, objective, weights)")
    table = pa.concat_tables([pq.read_table(p) for p in io.shard_paths(folder)])
    table = table.sort_by("example")
    n = len(columns["labels"])
    examples = table.column("example").to_numpy()
    if len(examples) != n or not np.array_equal(examples, np.arange(n)):
        raise DistillError(f"{folder}: holds {len(set(examples.tolist()))} of the {n} "
                           "sequences; rerun distill logits capture to finish it")
    k = manifest["top_k"]
    labels = [np.asarray(x) for x in columns["labels"]]
    cached_ids = table.column("id").to_pylist()
    cached_tokens = table.column("tokens").to_numpy()
    flags = []
    for e, (y, row_id) in enumerate(zip(labels, row_ids(rows, report.example_rows))):
        counts = np.concatenate([[False], y[1:] != -100])
        if cached_ids[e] != row_id or cached_tokens[e] != counts.sum():
            raise DistillError(f"{folder}: sequence {e} is row {cached_ids[e]!r} with "
                               f"{cached_tokens[e]} tokens in the cache, row {row_id!r} with "
                               f"{counts.sum()} tokens here")
        flags.append(counts)
    flags = np.concatenate(flags)
    inner = pa.array(np.concatenate([[0], np.cumsum(flags * k)]).astype(np.int32))
    outer = pa.array(np.concatenate([[0], np.cumsum([len(y) for y in labels])]).astype(np.int32))
    ids_values = pa.concat_arrays(table.column("ids").chunks).flatten()
    lp_values = pa.concat_arrays(table.column("logprobs").chunks).flatten()
    ids_column = pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, ids_values))
    lp_column = pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, lp_values))
    return ids_column, lp_column, manifest


def _prepare_folder(out: Path, manifest: dict, restart: bool) -> None:
    """Start, or resume a capture of the same teacher, k and sequences; else stop."""
    old = io.read_manifest(out)
    if old is not None and restart:
        io.remove_shards(out)
        old = None
    if old is not None:
        keys = ("kind", "teacher", "top_k", "vocab_size", "data_sha256")
        changed = [k for k in keys if old.get(k) != manifest[k]]
        if (old.get("tokenizer") or {}).get("vocab_sha256") != \
                manifest["tokenizer"]["vocab_sha256"]:
            changed.append("tokenizer")
        if changed:
            raise DistillError(f"{out} holds another capture ({', '.join(changed)} differ); "
                               "rerun with --restart to replace it, or pick another --out")
    io.write_manifest(out, manifest)

