"""The generate plan: which rows a prompt file x source rows x n samples makes, their ids,
which of them the output folder already holds (resume), and the sink that writes the rest.
Both executors (``distill.datagen.local`` and ``distill.datagen.ray``) run a plan.

Rows get an ``id`` that depends only on the prompt name, the source row and the sample
index, so the same command again skips what is on disk and generates only the rest. Each
backend call becomes one atomic shard: a crash loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from distill import io
from distill.data import load_source
from distill.datagen import turns
from distill.datagen.backends import (
    Backend,
    Completion,
    PromptLimit,
    Request,
    Sampling,
    check_number,
    get_backend,
)
from distill.datagen.prompts import PromptFile, load_prompt
from distill.datagen.structured import parse as parse_output
from distill.errors import DistillError
from distill.log import log
from distill.log import progress as progress_bar
from distill.models import DEFAULT_MODEL, model_files, resolve_model

# Settings that change what a row says; a rerun must match them to reuse rows.
ROW_KEY = ("model", "prompt_sha256", "temperature", "top_p", "max_tokens", "stop", "seed",
           "logprobs")


@dataclass
class Item:
    """One rendered prompt: the unit a backend request and a resume decision are about."""

    key: str
    source_id: str
    fields: dict
    messages: list[dict]
    where: str
    missing: list[int] = field(default_factory=list)


def row_schema(logprobs: bool, output: bool = False, tools: bool = False) -> pa.Schema:
    """The columns of a generate row; ``output``: a prompt that declares a structured output
    adds ``output`` and ``output_valid``; ``tools``: a prompt with tools adds ``tool_calls``."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    cols = [("id", pa.string()), ("source_id", pa.string()), ("sample_index", pa.int32()),
            ("question", pa.string()), ("gold", pa.string()), ("template", pa.string()),
            ("kind", pa.string()), ("task", pa.string()), ("messages", pa.list_(message)),
            ("shots", pa.int32()),
            ("completion", pa.string()), ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int32()), ("tokens", pa.int32()), ("model", pa.string()),
            ("backend", pa.string()), ("sampling", pa.string()), ("source", pa.string())]
    if logprobs:
        cols += [("token_ids", pa.list_(pa.int32())),
                 ("top_ids", pa.list_(pa.list_(pa.int32()))),
                 ("top_logprobs", pa.list_(pa.list_(pa.float32())))]
    if output:
        cols += [("output", pa.string()), ("output_valid", pa.bool_())]
    if tools:
        call = pa.struct([("code", pa.string()), ("output", pa.string()), ("error", pa.string())])
        cols.append(("tool_calls", pa.list_(call)))
    return pa.schema(cols)


def make_plan(prompt: str, source: str, out: str | Path, *, model: str | None = None,
              n: int | None = None, limit: int | None = None,
              temperature: float | None = None, top_p: float | None = None,
              max_tokens: int | None = None, seed: int | None = None, logprobs: int = 0,
              fields: dict[str, str] | None = None, tasks: list[str] | None = None,
              shuffle: bool = False, split: str = "train", subset: str | None = None,
              revision: str | None = None, shots: int | None = None, regenerate: bool = False,
              cache: bool = False,
              context: Callable[[], PromptLimit | None] | None = None) -> Plan:
    """Render every source row, check that each prompt fits the model's context (``context``
    gives the limit, or None where unknown), check what ``out`` already holds, and mark its
    manifest running; the other arguments are ``generate``'s. Every check comes before
    anything is written."""
    check_number("limit", limit, 1)
    pf = load_prompt(prompt).with_shots(shots)
    overrides = {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                 "seed": seed}
    sampling = Sampling(**{**pf.sampling, **{k: v for k, v in overrides.items() if v is not None}},
                        logprobs=logprobs, output=pf.output)
    if logprobs and turns.chained(pf):
        raise DistillError(f"{pf.path}: --logprobs is for one-call prompts; this prompt file "
                           "has follow-up turns or tools")
    rows = load_source(source, fields=fields, limit=limit, shuffle=shuffle,
                       seed=sampling.seed, split=split, subset=subset, revision=revision)
    items, duplicates = _render(pf, rows, tasks)
    if context is not None and (prompt_limit := context()) is not None:
        _check_lengths(items, prompt_limit)
    model_name = model or DEFAULT_MODEL
    out = Path(out)
    key = {"model": model_name, "model_files": model_files(model_name),
           "prompt_sha256": pf.sha256,
           **{k: v for k, v in sampling.to_dict().items() if k in ROW_KEY}, "shots": shots}
    _check_reuse(out, key, regenerate)

    done = io.read_ids(out) if (out / io.DATA_DIR).exists() else set()
    if not cache:
        done = _check_stale(out, done, items, sampling.n, regenerate)
    for item in items:
        item.missing = [k for k in range(sampling.n) if row_id(item.key, k) not in done]
    pending = [it for it in items if it.missing]
    total = len(items) * sampling.n
    reused = total - sum(len(it.missing) for it in pending)
    log(f"{out}: {total} rows planned; " + (
        f"reusing {reused} already there (same prompt, model and sampling), "
        f"generating {total - reused}" if reused else f"generating all {total}"))

    manifest = _manifest(pf, source, key, sampling, total, model_name, fields)
    if (previous := io.read_manifest(out)) and "backend" in previous:
        manifest["backend"] = previous["backend"]  # kept when nothing is left to generate
    out.mkdir(parents=True, exist_ok=True)
    io.write_manifest(out, {**manifest, "status": "running"})
    return Plan(pf, sampling, model_name, pending, out, total, reused, duplicates, manifest)


@dataclass
class Plan:
    """The rendered items that still miss rows, and how their requests and rows are made;
    the folder, its row counts (planned, reused), the duplicate source rows skipped, and the
    manifest to write when done."""

    pf: PromptFile
    sampling: Sampling
    model_name: str
    pending: list[Item]
    out: Path
    total: int
    reused: int
    duplicates: int
    manifest: dict

    def batches(self, size: int) -> list[list[Item]]:
        return [self.pending[i:i + size] for i in range(0, len(self.pending), size)]

    def requests(self, batch: list[Item]) -> list[Request]:
        return [Request(it.messages, len(it.missing), _seed(self.sampling.seed, it))
                for it in batch]

    def work(self, batch: list[Item]) -> tuple[list[Request], list[dict]]:
        """The batch's requests and their source fields (which follow-up turns render)."""
        return self.requests(batch), [it.fields for it in batch]

    def generate(self, engine: Backend, batch: list[Item]) -> list[list[Completion]]:
        """The batch's completions: one call per request, or each sample followed through the
        prompt file's turns and tool calls (``distill.datagen.turns``)."""
        requests, rows = self.work(batch)
        return turns.generate(engine, requests, self.sampling, self.pf, rows)

    def rows(self, batch: list[Item], outputs: list[list[Completion]], backend: str) -> list[dict]:
        sampling_json = json.dumps(self.sampling.to_dict(), sort_keys=True)
        return [_row(it, k, c, self.pf, backend, self.model_name, sampling_json)
                for it, completions in zip(batch, outputs)
                for k, c in zip(it.missing, completions)]


class Sink:
    """Writes each batch of finished rows as one atomic shard; counts rows, tokens and
    finish reasons, with a progress bar."""

    def __init__(self, out: Path, schema: pa.Schema, total: int, progress: bool):
        self.out, self.schema, self.writer = out, schema, None
        self.written, self.tokens, self.reasons = 0, 0, Counter()
        self.bar = progress_bar(total, "generate", "row", progress)
        self.start = time.perf_counter()

    def write(self, rows: list[dict]) -> None:
        if self.writer is None:
            self.writer = io.ShardWriter(self.out, self.schema)
        self.writer.write(rows)
        self.written += len(rows)
        self.tokens += sum(r["tokens"] for r in rows)
        self.reasons.update(r["finish_reason"] for r in rows)
        self.bar.update(len(rows))
        self.bar.set_postfix_str(f"{self.tokens / (time.perf_counter() - self.start):.1f} tok/s")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def make_engine(backend: str, model: str | None, options: dict) -> Backend:
    """The backend ``backend`` for ``model`` (None: the embedded default teacher)."""
    return get_backend(backend, model if backend == "openai" else resolve_model(model), **options)


def row_id(key: str, sample_index: int) -> str:
    return hashlib.sha256(f"{key}\x00{sample_index}".encode()).hexdigest()[:20]


def _render(pf: PromptFile, rows, tasks) -> tuple[list[Item], int]:
    """Render every row up front, so a bad row stops the run before any generation."""
    items: dict[str, Item] = {}
    duplicates = 0
    for row in rows:
        source_id = str(row.fields["id"]) if "id" in row.fields else _hash(row.fields)
        for expanded in pf.expand(row.fields, row.where, tasks):
            task = expanded.get("task")
            item_key = f"{pf.name}\x00{source_id}" + (f"\x00{task}" if task else "")
            if item_key in items:
                duplicates += 1
                continue
            items[item_key] = Item(item_key, source_id, expanded,
                                   pf.render(expanded, row.where), row.where)
    return list(items.values()), duplicates


def _check_lengths(items: list[Item], limit: PromptLimit) -> None:
    """Stop, naming the first row and its token count, when a prompt does not fit the model's
    context (it would fail or run for minutes with no message)."""
    over = [(it, n) for it in items if (n := limit.too_long(it.messages)) is not None]
    if over:
        item, tokens = over[0]
        more = f" ({len(over)} rows are too long; this is the first)" if len(over) > 1 else ""
        raise DistillError(f"{item.where}: its prompt is {tokens} tokens, and the model's context "
                           f"is {limit.context} ({limit.source}){more}; shorten or remove the "
                           "row, or use a --teacher with a longer context")


def _row(item: Item, k: int, c: Completion, pf: PromptFile, backend: str, model_name: str,
         sampling_json: str) -> dict:
    f = item.fields
    gold = f.get("gold", f.get("answer"))
    row = {
        "id": row_id(item.key, k), "source_id": item.source_id, "sample_index": k,
        "question": str(f.get("question") or f.get("instruction") or item.messages[-1]["content"]),
        "gold": None if gold is None else str(gold), "template": pf.name, "kind": pf.kind,
        "task": f.get("task"), "messages": getattr(c, "messages", None) or item.messages,
        "shots": len(pf.few_shot),
        "completion": c.text,
        "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens, "tokens": c.tokens,
        "model": model_name, "backend": backend, "sampling": sampling_json,
        "source": json.dumps(f, sort_keys=True, default=str),
    }
    if c.top_ids is not None:
        row.update(token_ids=c.token_ids, top_ids=c.top_ids, top_logprobs=c.top_logprobs)
    if pf.output:
        row["output"], row["output_valid"] = parse_output(pf.output, c.text)
    if pf.tools:
        row["tool_calls"] = c.tool_calls
    return row


REGENERATE = ("Pass --regenerate (a recipe: `regenerate: true` in the stage's section) to "
              "discard them, or choose another --out")


def _check_reuse(out: Path, key: dict, regenerate: bool) -> None:
    """Stop when the rows in ``out`` were made with other settings (``regenerate``: discard
    them, only the shards generate wrote) or when two rows share an id."""
    if not io.shard_paths(out):
        return
    repeated = io.duplicate_ids(out)
    if repeated:
        raise DistillError(f"{out}: {sum(repeated.values()) - len(repeated)} rows repeat the id "
                           f"of another row (two writers at once?); run `distill check {out} "
                           "--repair` to keep the first row of each id, then rerun")
    old = (io.read_manifest(out) or {}).get("row_key", {})
    changed = {k: (old.get(k), v) for k, v in key.items()
               if old.get(k) != v and (k in old or k != "model_files")}  # not recorded before 0.3
    if not changed:
        return
    what = "; ".join("the model's files: changed since (trained again, or replaced)"
                     if k == "model_files" else f"{k}: {a!r} then, {b!r} now"
                     for k, (a, b) in changed.items())
    if regenerate:
        log(f"{out}: settings changed ({what}); --regenerate: discarding "
            f"{len(io.read_ids(out))} existing rows")
        io.remove_shards(out)
        return
    raise DistillError(f"{out}: its rows were made with other settings ({what}); nothing was "
                       f"reused. {REGENERATE}")


def _check_stale(out: Path, done: set[str], items: list[Item], n: int,
                 regenerate: bool) -> set[str]:
    """``done``, the ids of the rows in ``out``; stop when some are not in this plan (their
    problem left the source, or ``n`` shrank): later stages would read them as this run's
    (``regenerate``: discard them all, only the shards generate wrote)."""
    stale = done - {row_id(it.key, k) for it in items for k in range(n)}
    if not stale:
        return done
    if regenerate:
        log(f"{out}: {len(stale)} rows are not in this plan; --regenerate: discarding "
            f"{len(done)} existing rows")
        io.remove_shards(out)
        return set()
    raise DistillError(f"{out}: {len(stale)} of its {len(done)} rows are not in this plan "
                       "(their problems left the source, or n shrank) and would be read as "
                       f"this run's; nothing was generated. {REGENERATE}")


def _manifest(pf: PromptFile, source: str, key: dict, sampling: Sampling, total: int,
              model_name: str, fields) -> dict:
    return {
        "kind": "generate", "created": io.now(), "model": model_name,
        "prompt": {"name": pf.name, "path": pf.path, "sha256": pf.sha256, "kind": pf.kind,
                   "answer_format": pf.answer_format},
        "source": {"path": source, "fields": fields or {}},
        "sampling": sampling.to_dict(), "row_key": key, "rows_planned": total,
        "versions": io.package_versions(),
    }


def _seed(base: int, item: Item) -> int:
    digest = hashlib.sha256(f"{base}\x00{item.key}\x00{item.missing[0]}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _hash(fields: dict) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

