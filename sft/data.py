"""Rows -> tokenized training examples with span masks, checked before training starts.

Each row (``messages``: the chat prompt, ``completion``, optional ``answer_span``) is rendered
with the tokenizer's chat template (ChatML when it has none), tokenized once with character
offsets, and every token gets a span id:

* 0 prompt: everything the generation prompt renders; never counted.
* 1 reasoning: completion tokens before the final answer.
* 2 answer: tokens overlapping ``answer_span`` and every completion token after it, the
  end-of-turn token included (so the answer weight also teaches the model to stop).

A row without an answer span is all reasoning. The ```output blocks of a tool-integrated
trace (``distill.tools``: what a program printed, not what the model wrote) count as prompt:
their tokens are never in the loss. ``labels`` are the input ids where the span's
weight is > 0, else -100: the ids and labels TRL itself builds for the same row in its
prompt-completion format, with the completion mask split in two.

Fail closed: a bad row (all-zero loss mask, missing-but-needed or unmappable answer span, a
completion the template does not render verbatim) and a row truncated by ``max_length``
before the end of its answer are counted, then dropped or stop the run, by setting; the
numbers are printed before any training step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.chat import ensure_chat_template
from distill.errors import DistillError
from distill.log import log
from distill.tools import output_spans

PROMPT, REASONING, ANSWER = 0, 1, 2
SPAN_NAMES = ("prompt", "reasoning", "answer")
BAD, TRUNCATED = "bad", "truncated"


def load_rows(path: str | Path, options: dict | None = None):
    """(the rows as a memory-mapped ``datasets.Dataset`` of distill rows, the manifest of the
    folder they come from, what was read) of any data ``distill.data.read`` takes;
    ``options``: its split, subset, revision and fields."""
    data = read_data(path, options)
    if len(data.dataset) == 0:
        raise DistillError(f"{data.name}: the dataset has no rows")
    return data.dataset, data.manifest, str(data.folder or data.name)


def read_data(path: str | Path, options: dict | None = None):
    """``path`` read and mapped to distill's row (messages + completion): fails fast, with one
    line, on data that cannot be trained on."""
    from distill.data import conversations, read

    return conversations(read(path, **(options or {})))


@dataclass
class Target:
    """One training sequence to build: prompt messages, the text to learn, and where the
    answer lies in it (character offsets), if known."""

    row: int
    messages: list[dict]
    completion: str
    span: tuple[int, int] | None


@dataclass
class DataReport:
    rows: int = 0
    examples: int = 0
    max_length: int | None = None
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    kinds: dict = field(default_factory=dict)  # reason -> BAD | TRUNCATED
    samples: dict = field(default_factory=dict)  # reason -> first few row ids
    tokens: Counter = field(default_factory=Counter)  # span name -> tokens (kept examples)
    no_span: int = 0  # rows without an answer span (all reasoning)
    tail_truncated: int = 0  # answer kept, tokens after it cut
    no_end_of_turn: int = 0  # examples whose labels never include the eos token
    boundary_tokens: int = 0  # tokens straddling prompt and completion (counted as prompt)
    example_rows: list = field(default_factory=list)  # row index of each kept example

    @property
    def dropped_rows(self) -> int:
        return sum(self.dropped.values())

    def drop(self, reason: str, kind: str, row_id) -> None:
        self.dropped[reason] += 1
        self.kinds[reason] = kind
        self.samples.setdefault(reason, [])
        if len(self.samples[reason]) < 3:
            self.samples[reason].append(str(row_id))

    def lines(self) -> list[str]:
        t = self.tokens
        out = [(f"{self.rows} rows -> {self.examples} training sequences; "
               f"tokens: prompt {t['prompt']}, reasoning {t['reasoning']}, answer {t['answer']}")]
        for reason, n in self.dropped.most_common():
            out.append(f"  {n} rows {reason} (e.g. {', '.join(self.samples[reason])})")
        if self.no_span:
            out.append(f"  {self.no_span} rows have no answer span: their completion counts as "
                       "reasoning")
        if self.tail_truncated:
            out.append(f"  {self.tail_truncated} sequences keep their answer but lose tokens after "
                       f"it to max_length={self.max_length}")
        if self.no_end_of_turn:
            out.append(f"  {self.no_end_of_turn} sequences never train the end-of-turn token: the "
                       "model may not learn to stop")
        if self.boundary_tokens:
            out.append(f"  {self.boundary_tokens} tokens straddle the prompt/completion boundary "
                       "and count as prompt")
        return out

    def to_dict(self) -> dict:
        return {"rows": self.rows, "examples": self.examples, "max_length": self.max_length,
                "dropped": dict(self.dropped), "tokens": dict(self.tokens),
                "no_answer_span": self.no_span, "tail_truncated": self.tail_truncated,
                "no_end_of_turn": self.no_end_of_turn, "boundary_tokens": self.boundary_tokens}


COLUMNS = ("input_ids", "labels", "span_ids")


def _features():
    """One record per training sequence, or one per dropped row (``reason`` set, no tokens);
    the counts of the rows a batch saw (no_span, boundary, tail) ride on its first record."""
    from datasets import Features, List, Value

    ints = List(Value("int64"))
    return Features({"input_ids": ints, "labels": ints, "span_ids": ints, "row": Value("int64"),
                     "row_id": Value("string"), "reason": Value("string"),
                     "kind": Value("string"), "no_span": Value("int64"),
                     "boundary": Value("int64"), "tail": Value("int64"), "no_eot": Value("bool"),
                     **{name: Value("int64") for name in SPAN_NAMES}})


def build_examples(rows, tokenizer, config, *, verbose=True):
    """Tokenize rows into ``{"input_ids", "labels", "span_ids"}`` columns; apply the
    fail-closed policies of ``config`` (a ``DistillSFTConfig``). A row is dropped whole: in
    step_by_step, both of its sequences. ``rows``: a ``datasets.Dataset`` (tokenized by
    ``Dataset.map`` in batches, cached in the ``datasets`` cache: the columns come back as a
    Dataset) or
    a list of row dicts (the columns come back as lists). Returns (columns, DataReport)."""
    from datasets import Dataset

    ensure_chat_template(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise DistillError("distill train sft needs a fast tokenizer (it maps the answer span "
                           "with the tokenizer's character offsets)")
    settings = {"tokenizer": tokenizer, "config": config}
    if isinstance(rows, Dataset):
        fingerprint = _fingerprint(rows, tokenizer, config)
        records = rows.map(_batch_records, batched=True, batch_size=512, with_indices=True,
                           fn_kwargs=settings, remove_columns=rows.column_names,
                           features=_features(), new_fingerprint=fingerprint,
                           cache_file_name=_cache_file(rows, fingerprint),
                           desc="data: tokenizing")
    else:
        records = Dataset.from_dict(_records(rows, 0, **settings), features=_features())
    kept, report = _report(records, len(rows), config)
    if verbose:
        for line in report.lines():
            log(f"data: {line}")
    check(report, config)
    columns = kept.select_columns(list(COLUMNS))
    return (columns if isinstance(rows, Dataset) else columns.to_dict()), report


def row_ids(rows, indices: list[int]) -> list[str]:
    """The ``id`` of each row in ``indices`` (``row N`` where there is none), reading only the
    id column of a Dataset."""
    from datasets import Dataset

    if not isinstance(rows, Dataset):
        return [str(_row_id(rows, i)) for i in indices]
    if "id" not in rows.column_names:
        return [f"row {i}" for i in indices]
    ids = rows.select_columns(["id"]).select(indices)["id"]
    return [str(x) for x in ids]


def _cache_file(rows, fingerprint: str) -> str | None:
    """Where the records of memory-mapped ``rows`` go: the ``datasets`` cache, never the
    folder the data came from (a ``save_to_disk`` folder is the user's); None (in memory) for
    rows held in memory."""
    from datasets import config as datasets_config

    if not rows.cache_files:
        return None
    folder = Path(datasets_config.HF_DATASETS_CACHE) / "distill-sft"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"examples-{fingerprint}.arrow")


def _fingerprint(rows, tokenizer, config) -> str:
    """What the tokenized records depend on: the data, the tokenizer, the data settings and
    this module's code."""
    from datasets.fingerprint import Hasher

    settings = {k: getattr(config, k) for k in ("max_length", "objective", "label_prefix",
                                                 "rationale_prefix", "answer_span_field",
                                                 "drop_few_shot")}
    return Hasher.hash((rows._fingerprint, Hasher.hash(tokenizer), settings,
                        config.span_weights(), config.needs_answer_span(),
                        Path(__file__).read_bytes()))


def _batch_records(batch: dict, indices: list[int], tokenizer, config) -> dict:
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    return _records(rows, indices[0], tokenizer, config)


def _records(rows: list[dict], first: int, tokenizer, config) -> dict:
    """The records (see ``_features``) of ``rows``, the first of which is row ``first``."""
    part = DataReport()  # the batch's counts
    failed: dict[int, tuple[str, str]] = {}  # row -> (reason, kind); the first reason wins
    weights = np.array([0.0, *config.span_weights()])
    built: dict[int, list] = {}  # row -> [(ids, labels, spans)]
    for start in range(0, len(rows), 512):
        for t, result in _encode(_targets(rows, config, part, failed, start, start + 512),
                                 tokenizer):
            if isinstance(result, str):
                failed.setdefault(t.row, (result, BAD))
                continue
            ids, offsets, p_end, a_start, a_end, tool = result
            spans = _spans(offsets, p_end, a_start, a_end, config.max_length, part, tool)
            if isinstance(spans, tuple):
                failed.setdefault(t.row, spans)
                continue
            counted = weights[spans] > 0
            if not counted.any():
                failed.setdefault(t.row, ("have an all-zero loss mask", BAD))
                continue
            built.setdefault(t.row, []).append(
                (ids[:len(spans)], np.where(counted, ids[:len(spans)], -100), spans))
    out = {name: [] for name in _features()}
    eos = tokenizer.eos_token_id
    none = np.zeros(0, dtype=np.int64)

    def add(row, ids=none, labels=none, spans=none, reason=None, kind=None):
        first_record = not out["row"]
        out["input_ids"].append(ids.tolist())
        out["labels"].append(labels.tolist())
        out["span_ids"].append(spans.tolist())
        out["row"].append(first + row)
        out["row_id"].append(str(_row_id(rows, row, first)) if reason else None)
        out["reason"].append(reason)
        out["kind"].append(kind)
        out["no_span"].append(part.no_span if first_record else 0)
        out["boundary"].append(part.boundary_tokens if first_record else 0)
        out["tail"].append(part.tail_truncated if first_record else 0)
        out["no_eot"].append(reason is None and eos is not None and eos not in labels)
        for k, name in enumerate(SPAN_NAMES):
            out[name].append(int((spans == k).sum()))

    for row in range(len(rows)):
        if row in failed:
            add(row, reason=failed[row][0], kind=failed[row][1])
            continue
        for ids, labels, spans in built.get(row, []):
            add(row, ids, labels, spans)
    return out


def _report(records, rows: int, config):
    """(the records of kept sequences, the DataReport of all records), read from their small
    columns."""
    import pyarrow.compute as pc

    table = records.data.table
    report = DataReport(rows=rows, max_length=config.max_length)
    dropped = pc.is_valid(table.column("reason"))
    for r in table.select(["reason", "kind", "row_id"]).filter(dropped).to_pylist():
        report.drop(r["reason"], r["kind"], r["row_id"])
    report.no_span = _sum(table.column("no_span"))
    report.boundary_tokens = _sum(table.column("boundary"))
    report.tail_truncated = _sum(table.column("tail"))
    keep = np.flatnonzero(pc.invert(dropped).to_numpy(zero_copy_only=False))
    kept = records.select(keep)
    kept_table = table.select(["row", "no_eot", *SPAN_NAMES]).take(keep)
    report.example_rows = kept_table.column("row").to_pylist()
    report.examples = len(keep)
    report.no_end_of_turn = _sum(kept_table.column("no_eot"))
    if report.examples:
        for name in SPAN_NAMES:
            report.tokens[name] += _sum(kept_table.column(name))
    return kept, report


def _sum(column) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(column).as_py() or 0)


def check(report: DataReport, config) -> None:
    """Stop, with the numbers, on what the settings say must stop the run."""
    bad = {r: n for r, n in report.dropped.items() if report.kinds[r] == BAD}
    cut = {r: n for r, n in report.dropped.items() if report.kinds[r] == TRUNCATED}
    detail = "; ".join(f"{n} rows {r} (e.g. {', '.join(report.samples[r])})"
                       for r, n in report.dropped.most_common())
    if bad and config.on_bad_row == "error":
        raise DistillError(f"{sum(bad.values())} of {report.rows} rows cannot be trained as "
                           f"asked: {detail}. Fix the data, or set on_bad_row=drop")
    if cut and config.on_truncated == "error":
        raise DistillError(f"{sum(cut.values())} of {report.rows} rows are truncated by "
                           f"max_length={config.max_length} before the end of their answer: "
                           f"{detail}. Raise max_length, or set on_truncated=drop")
    if report.examples == 0:
        raise DistillError(f"no trainable rows left of {report.rows}: {detail or 'empty input'}")
    share = report.dropped_rows / report.rows
    if share > config.max_dropped_fraction:
        raise DistillError(f"{report.dropped_rows} of {report.rows} rows ({share:.0%}) would be "
                           f"dropped, more than max_dropped_fraction="
                           f"{config.max_dropped_fraction}: {detail}")


def _row_id(rows, i, first=0):
    return rows[i].get("id", f"row {first + i}")


def _targets(rows: list[dict], config, report: DataReport, failed: dict, lo: int,
             hi: int) -> list[Target]:
    needs_span = config.needs_answer_span()
    out = []
    for i in range(lo, min(hi, len(rows))):
        row = rows[i]
        messages, completion = row.get("messages"), row.get("completion")
        if not _is_chat(messages):
            failed[i] = ("have no messages (a list of {role, content})", BAD)
            continue
        if not isinstance(completion, str) or not completion.strip():
            failed[i] = ("have an empty completion", BAD)
            continue
        span = row.get(config.answer_span_field)
        if span is None:
            if needs_span:
                failed[i] = ((f"have no {config.answer_span_field} (needed: answer and "
                             "reasoning are weighted apart)"), BAD)
                continue
            report.no_span += 1
        else:
            try:
                a, b = (int(x) for x in span)
            except (TypeError, ValueError):
                a, b = -1, -1
            if not 0 <= a < b <= len(completion):
                failed[i] = ((f"have an {config.answer_span_field} outside their "
                             "completion"), BAD)
                continue
            span = (a, b)
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if config.drop_few_shot:
            messages = _without_few_shot(messages, row.get("shots"))
            if messages is None:
                failed[i] = ("have a shots column their messages do not hold", BAD)
                continue
        if config.objective == "step_by_step":
            answer = completion[span[0]:span[1]]
            rationale = row.get("reasoning")
            if not isinstance(rationale, str) or not rationale.strip():
                rationale = completion[:span[0]].strip()
            if not rationale:
                failed[i] = ("have no rationale before their answer", BAD)
                continue
            out.append(Target(i, _prefixed(messages, config.label_prefix), answer,
                              (0, len(answer))))
            out.append(Target(i, _prefixed(messages, config.rationale_prefix), rationale, None))
        else:
            out.append(Target(i, messages, completion, span))
    return out


def _is_chat(messages) -> bool:
    return (isinstance(messages, list) and len(messages) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages))


def _without_few_shot(messages: list[dict], shots: int | None) -> list[dict] | None:
    """The messages without the few-shot exemplars: the leading system message (if any) and
    the turns after the ``shots`` exemplars (a user and an assistant turn each) that follow it,
    the conversation the sample had; None when no user turn is left. Rows without ``shots``
    (not written by generate) keep the system message and the last message."""
    system = messages[:1] if messages[0]["role"] == "system" and len(messages) > 1 else []
    if shots is None:
        return system + messages[-1:]
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        return None
    rest = messages[len(system) + 2 * shots:]
    return system + rest if rest and rest[0]["role"] == "user" else None


def _prefixed(messages: list[dict], prefix: str) -> list[dict]:
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = prefix + m["content"]
            break
    return out


def _encode(targets: list[Target], tokenizer):
    """Yield (target, (ids, offsets, prompt end, answer start, answer end, tool output spans))
    or (target, reason)."""
    rendered = [_render(t, tokenizer) for t in targets]
    ok = [(t, r) for t, r in zip(targets, rendered) if isinstance(r, tuple)]
    for t, r in zip(targets, rendered):
        if isinstance(r, str):
            yield t, r
    if not ok:
        return
    enc = tokenizer([r[0] for _, r in ok], add_special_tokens=False, return_offsets_mapping=True)
    for (t, (_, p_end, a_start, a_end, tool)), ids, offsets in zip(ok, enc["input_ids"],
                                                                   enc["offset_mapping"]):
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        yield t, (np.asarray(ids, dtype=np.int64), offsets, p_end, a_start, a_end, tool)


def _render(t: Target, tokenizer):
    """(full text, prompt end, answer start, answer end, tool output spans) in characters, or
    a drop reason."""
    prompt = tokenizer.apply_chat_template(t.messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        t.messages + [{"role": "assistant", "content": t.completion}], tokenize=False)
    if not full.startswith(prompt):
        return "render differently as a prompt than inside the whole conversation"
    text, shift = t.completion, 0
    if full.startswith(text, len(prompt)):
        start = len(prompt)
    else:
        start = full.rfind(text, len(prompt))
        if start < 0:  # templates that trim the message content
            text = t.completion.strip()
            shift = len(t.completion) - len(t.completion.lstrip())
            start = full.rfind(text, len(prompt)) if text else -1
        if start < 0:
            return "have a completion the chat template does not render verbatim"
    tool = [(start + a, start + b) for a, b in output_spans(text)]
    if t.span is None:
        return full, len(prompt), None, None, tool
    a, b = t.span[0] - shift, t.span[1] - shift
    if a < 0 or b > len(text):
        return "have an answer span in whitespace the chat template trims"
    return full, len(prompt), start + a, start + b, tool


def _spans(offsets: np.ndarray, p_end: int, a_start: int | None, a_end: int | None,
           max_length: int | None, report: DataReport, tool: list[tuple[int, int]] = ()):
    """Span id per token (truncated to max_length), or (reason, kind) to drop the row. Tokens
    overlapping a ``tool`` output span count as prompt."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    spans = np.full(len(offsets), REASONING, dtype=np.int64)
    spans[starts < p_end] = PROMPT
    report.boundary_tokens += int(((starts < p_end) & (ends > p_end)).sum())
    if a_start is not None:
        if ((starts < p_end) & (ends > a_start)).any():
            return "have an answer that starts inside a prompt token", BAD
        answer = (starts >= p_end) & (ends > a_start)
        first = int(np.argmax(answer)) if answer.any() else -1
        if first < 0 or starts[first] >= a_end:
            return "have an answer span that maps to no token", BAD
        spans[first:] = ANSWER
        last = int(np.nonzero(starts < a_end)[0].max())  # the token holding the answer's end
    else:
        last = len(spans) - 1
    for a, b in tool:
        spans[(starts < b) & (ends > a)] = PROMPT
    if max_length is not None and len(spans) > max_length:
        if last >= max_length:
            return f"are cut by max_length={max_length} before the end of their answer", TRUNCATED
        report.tail_truncated += 1
        spans = spans[:max_length]
    return spans
