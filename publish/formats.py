"""The columns trainers read: a row in the ``messages``, ``prompt-completion``, ``alpaca`` or
``sharegpt`` format, plus the row's metadata columns."""

from __future__ import annotations

import pyarrow as pa

from distill.errors import DistillError

FORMATS = ("messages", "prompt-completion", "alpaca", "sharegpt")
# Row columns a published row keeps next to its format's columns (those the input has).
METADATA = ("id", "source_id", "sample_index", "question", "gold", "answer", "correct", "kind",
            "task", "template", "shots", "model", "finish_reason", "prompt_tokens", "tokens",
            "token_ids", "top_ids", "top_logprobs")  # the last 3: one-pass KD


def to_format(row: dict, fmt: str) -> dict:
    """One row in a trainer format. ``messages``: prompt messages + the assistant completion;
    ``prompt-completion``: TRL's conversational pair (``prompt`` messages, ``completion`` =
    [assistant message]); ``alpaca``: ``instruction`` (the last user turn), ``input``,
    ``output``, ``system``, ``history`` (earlier [user, assistant] turns, e.g. few-shot);
    ``sharegpt``: ``conversations`` of ``{from: system|human|gpt, value}``."""
    if fmt not in FORMATS:
        raise DistillError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    for column in ("messages", "completion"):
        if column not in row:
            raise DistillError(f"--format {fmt} needs the column {column!r}, which row "
                               f"{row.get('id', '?')} lacks; it has: {', '.join(row)}")
    prompt = [{"role": m["role"], "content": m["content"]} for m in row["messages"] or []]
    answer = {"role": "assistant", "content": row["completion"] or ""}
    if fmt == "messages":
        return {"messages": prompt + [answer]}
    if fmt == "prompt-completion":
        return {"prompt": prompt, "completion": [answer]}
    if fmt == "sharegpt":
        names = {"system": "system", "user": "human", "assistant": "gpt"}
        return {"conversations": [{"from": names.get(m["role"], m["role"]), "value": m["content"]}
                                  for m in prompt + [answer]]}
    system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
    turns = [m for m in prompt if m["role"] != "system"]
    instruction = turns[-1]["content"] if turns else str(row.get("question") or "")
    history = [[u["content"], a["content"]] for u, a in zip(turns[:-1:2], turns[1:-1:2])]
    return {"instruction": instruction, "input": "", "output": answer["content"],
            "system": system, "history": history}


def format_table(rows: list[dict], fmt: str, metadata: bool = True) -> pa.Table:
    """All rows in ``fmt`` as one table (one schema for every split), plus the metadata
    columns the rows have (those that are not empty everywhere)."""
    out = [to_format(r, fmt) for r in rows]
    if metadata and rows:
        keep = [c for c in METADATA if c not in out[0] and any(r.get(c) is not None for r in rows)]
        out = [{**o, **{c: r.get(c) for c in keep}} for o, r in zip(out, rows)]
    return pa.Table.from_pylist(out)
