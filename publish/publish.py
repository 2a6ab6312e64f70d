"""``distill publish``: a filtered (or plain) dataset folder becomes a folder ready for the hub.

The output holds ``data/{split}-NNNNN-of-NNNNN.parquet`` (train/test split by problem, so
samples of one problem never straddle splits), ``README.md`` (a dataset card whose YAML
``configs`` make ``datasets.load_dataset(OUT)`` find the splits; how the data was made, read
from the lineage of manifests; the filter funnel; length plots; samples; limitations),
``funnel.png`` (when the input has one), ``lengths.png`` and ``manifest.json``.
``push`` uploads the finished folder with ``huggingface_hub``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from distill import io
from distill.errors import DistillError
from distill.log import pct

FORMATS = ("messages", "prompt-completion", "alpaca", "sharegpt")
# Row columns a published row keeps next to its format's columns (those the input has).
METADATA = ("id", "source_id", "sample_index", "question", "gold", "answer", "correct", "kind",
            "task", "template", "model", "finish_reason", "prompt_tokens", "tokens")
SHARD_ROWS = 100_000
SPLIT_ORDER = ("train", "validation", "test")
SPLIT_NAME = re.compile(r"^\w+$")


# --- reading an input folder and its lineage ---------------------------------------------

@dataclass
class Input:
    """The rows' dataset folder, its manifest chain (newest first) and the folder holding the
    filter report (``report.json``, ``funnel.png``) when there is one."""

    folder: Path
    chain: list[dict]
    report_dir: Path | None

    @property
    def generate(self) -> dict:
        return next((m for m in self.chain if m.get("kind") == "generate"), {})

    @property
    def filters(self) -> list[dict]:
        """Filter manifests, oldest first."""
        return [m for m in reversed(self.chain) if m.get("kind") == "filter"]


def resolve(in_dir: str | Path) -> Input:
    """A filter output folder (its ``kept/``), or a dataset folder of ``data/part-*.parquet``."""
    path = Path(in_dir)
    if io.shard_paths(path / "kept"):
        folder, report_dir = path / "kept", path
    elif io.shard_paths(path):
        folder = path
        report_dir = path.parent if (path.parent / "report.json").exists() else None
    else:
        raise DistillError(f"{path}: neither a filter output (kept/data/part-*.parquet) nor a "
                           "dataset folder (data/part-*.parquet)")
    return Input(folder, lineage(io.read_manifest(folder)), report_dir)


def lineage(manifest: dict | None) -> list[dict]:
    """The manifest, the manifest of its input, and so on (``input_manifest`` links)."""
    chain = []
    while isinstance(manifest, dict) and len(chain) < 32:
        chain.append(manifest)
        manifest = manifest.get("input_manifest")
    return chain


def funnel(chain: list[dict]) -> dict | None:
    """``{rows_in, kept, stages}`` of the newest filter run in the chain, if any."""
    for m in chain:
        if m.get("kind") == "filter" and m.get("stages"):
            stages = m["stages"]
            return {"rows_in": stages[0]["seen"], "kept": stages[-1]["kept"], "stages": stages}
    return None


# --- splits and formats ------------------------------------------------------------------

def problem_of(row: dict) -> str:
    return str(row.get("source_id") or row.get("id"))


def assign_splits(rows: list[dict], *, test_size: float | None = None,
                  split_column: str | None = None, seed: int = 0) -> list[str]:
    """The split of each row. ``test_size``: a fraction (0 < F < 1) or a count (F >= 1) of
    problems (``source_id``) held out as ``test``, chosen by a seeded hash, so every sample of
    a problem lands in the same split. ``split_column``: a row column or source field whose
    value names the split. Neither: everything is ``train``."""
    if test_size is not None and split_column:
        raise DistillError("--test-size and --split-column exclude each other; pick one")
    if split_column:
        return _column_splits(rows, split_column)
    if not test_size:
        return ["train"] * len(rows)
    if test_size < 0 or (test_size >= 1 and test_size != int(test_size)):
        raise DistillError(f"--test-size takes a fraction in (0, 1) or a whole number of "
                           f"problems, not {test_size}")
    problems = sorted({problem_of(r) for r in rows},
                      key=lambda p: hashlib.sha256(f"{seed}\x00{p}".encode()).hexdigest())
    if len(problems) < 2:
        raise DistillError(f"--test-size: the rows hold {len(problems)} problem(s) (source_id); "
                           "a split by problem needs at least 2")
    k = round(test_size * len(problems)) if test_size < 1 else int(test_size)
    test = set(problems[:min(max(k, 1), len(problems) - 1)])
    return ["test" if problem_of(r) in test else "train" for r in rows]


def _column_splits(rows: list[dict], column: str) -> list[str]:
    splits, first = [], {}
    for r in rows:
        value = r.get(column)
        if column not in r:
            try:
                value = json.loads(r.get("source") or "{}").get(column)
            except (json.JSONDecodeError, AttributeError):
                value = None
        if value is None:
            raise DistillError(f"--split-column {column}: row {r.get('id')} has no {column!r} "
                               "column or source field")
        value = str(value)
        if not SPLIT_NAME.match(value):
            raise DistillError(f"--split-column {column}: {value!r} (row {r.get('id')}) is not "
                               "a split name (letters, digits, _)")
        prev = first.setdefault(problem_of(r), value)
        if prev != value:
            raise DistillError(f"--split-column {column}: problem {problem_of(r)} has rows in "
                               f"both {prev!r} and {value!r}; a problem must stay in one split")
        splits.append(value)
    return splits


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


# --- publish -----------------------------------------------------------------------------

@dataclass
class PublishResult:
    out: Path
    splits: dict[str, int]
    format: str
    url: str | None = None

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        line = f"{self.out}: {sum(self.splits.values())} rows ({parts}), format {self.format}"
        return line + (f"\npushed to {self.url}" if self.url else "")


def publish(in_dir: str | Path, to: str | Path, *, test_size: float | None = None,
            split_column: str | None = None, format: str = "messages", seed: int = 0,
            license: str = "other", language: list[str] | None = None,
            name: str | None = None, samples: int = 3, metadata: bool = True,
            to_hub: str | None = None, private: bool = False,
            token: str | None = None) -> PublishResult:
    """Write ``to`` as a hub-ready dataset folder from ``in_dir`` (see ``distill publish``);
    with ``to_hub``, then push it. The local folder is complete before any push starts."""
    src = resolve(in_dir)
    out = Path(to)
    if out.resolve() in (Path(in_dir).resolve(), src.folder.resolve()):
        raise DistillError(f"--to {out}: would overwrite the input; choose another folder")
    rows = io.read_rows(src.folder)
    if not rows:
        raise DistillError(f"{src.folder}: no rows to publish")
    splits = assign_splits(rows, test_size=test_size, split_column=split_column, seed=seed)
    table = format_table(rows, format, metadata)
    order = sorted(set(splits), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER
                                               else len(SPLIT_ORDER), s))
    by_split = {s: [i for i, x in enumerate(splits) if x == s] for s in order}

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / io.TMP_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / io.DATA_DIR).mkdir(parents=True)
    for split, idx in by_split.items():
        _write_split(tmp / io.DATA_DIR, split, table.take(idx))
    files = ["README.md", "manifest.json", "lengths.png"]
    fun = funnel(src.chain)
    if src.report_dir and (src.report_dir / "funnel.png").exists():
        shutil.copyfile(src.report_dir / "funnel.png", tmp / "funnel.png")
    elif fun:
        from distill.filters.report import funnel_chart

        funnel_chart(tmp / "funnel.png", fun["rows_in"], fun["stages"])
    has_funnel = (tmp / "funnel.png").exists()
    split_rows = {s: [rows[i] for i in idx] for s, idx in by_split.items()}
    _length_plot(tmp / "lengths.png", split_rows)
    manifest = {"kind": "publish", "created": io.now(), "input": str(in_dir),
                "format": format, "split_by": split_column or ("source_id" if test_size else None),
                "test_size": test_size, "seed": seed,
                "splits": {s: len(idx) for s, idx in by_split.items()},
                "columns": table.column_names, "input_manifest": src.chain[0] if src.chain else None,
                "versions": io.package_versions()}
    card = render_card(src, split_rows, table, by_split, manifest, license=license,
                       language=language or ["en"], name=name, samples=samples,
                       repo_id=to_hub, out=out, has_funnel=has_funnel)
    (tmp / "README.md").write_text(card)
    io.write_manifest(tmp, manifest)

    shutil.rmtree(out / io.DATA_DIR, ignore_errors=True)
    os.replace(tmp / io.DATA_DIR, out / io.DATA_DIR)
    for f in files + ["funnel.png"]:
        if (tmp / f).exists():
            os.replace(tmp / f, out / f)
        elif (out / f).exists():
            (out / f).unlink()  # a stale funnel from an earlier publish
    shutil.rmtree(tmp, ignore_errors=True)
    result = PublishResult(out, manifest["splits"], format)
    if to_hub:
        result.url = push(out, to_hub, private=private, token=token)
    return result


def _write_split(data: Path, split: str, table: pa.Table) -> None:
    n = max(1, -(-table.num_rows // SHARD_ROWS))
    for i in range(n):
        pq.write_table(table.slice(i * SHARD_ROWS, SHARD_ROWS),
                       data / f"{split}-{i:05d}-of-{n:05d}.parquet")


def push(folder: str | Path, repo_id: str, *, private: bool = False,
         token: str | None = None) -> str:
    """Upload a published folder to the hub as a dataset repo; returns its URL. Without a
    token or network: one DistillError that says the local folder is complete."""
    folder = Path(folder)
    later = (f"the dataset is complete in {folder}; push it later with "
             f"`hf upload {repo_id} {folder} --repo-type dataset`")
    try:
        from huggingface_hub import HfApi, constants, get_token
    except ImportError:
        raise DistillError(f"--to-hub needs huggingface_hub (pip install huggingface_hub); "
                           f"{later}") from None
    if constants.HF_HUB_OFFLINE:
        raise DistillError(f"--to-hub {repo_id}: HF_HUB_OFFLINE is set; nothing was pushed; "
                           f"{later}")
    token = token or get_token()
    if not token:
        raise DistillError(f"--to-hub {repo_id}: no Hugging Face token (set HF_TOKEN or run "
                           f"`hf auth login`); nothing was pushed; {later}")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset",
                          commit_message="distill publish", ignore_patterns=[".tmp/*"])
    except Exception as e:  # noqa: BLE001 (network, auth, repo id: the client raises many kinds)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise DistillError(f"--to-hub {repo_id}: push failed ({type(e).__name__}: {reason}); "
                           f"{later}") from None
    return str(url)


# --- lengths -----------------------------------------------------------------------------

def lengths(rows: list[dict]) -> dict[str, list[int]]:
    """Completion and prompt lengths: tokens where the rows count them, else characters."""
    def prompt_chars(r):
        return sum(len(m.get("content") or "") for m in r.get("messages") or [])

    out = {}
    if rows and all(r.get("tokens") is not None for r in rows):
        out["completion tokens"] = [int(r["tokens"]) for r in rows]
    else:
        out["completion characters"] = [len(r.get("completion") or "") for r in rows]
    if rows and all(r.get("prompt_tokens") is not None for r in rows):
        out["prompt tokens"] = [int(r["prompt_tokens"]) for r in rows]
    else:
        out["prompt characters"] = [prompt_chars(r) for r in rows]
    return out


def describe(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "mean": 0, "p90": 0, "max": 0}
    s = sorted(values)
    return {"min": s[0], "median": statistics.median(s), "mean": round(statistics.fmean(s), 1),
            "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1]}


def _length_plot(path: Path, split_rows: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_split = {s: lengths(rs) for s, rs in split_rows.items()}
    metrics = list(next(iter(per_split.values())))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [per_split[s][metric] for s in per_split]
        ax.hist(data, bins=30, stacked=True, label=list(per_split))
        ax.set_xlabel(metric)
        ax.set_ylabel("rows")
        ax.set_title(metric.split()[0] + " length")
        if len(per_split) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the dataset card --------------------------------------------------------------------

def size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                         (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return label
    return "n>1T" if n > 10 ** 12 else "1B<n<10B"


KIND_TAGS = {"cot": "chain-of-thought", "pot": "program-of-thought",
             "instruction": "instruction-tuning"}
LOAD_HINTS = {
    "messages": "The `messages` column is a chat (prompt turns + the teacher's answer), the "
                "conversational format TRL's `SFTTrainer` takes as it is.",
    "prompt-completion": "`prompt` (chat turns) and `completion` (the assistant turn) are TRL's "
                         "conversational prompt-completion format: `SFTTrainer` trains on the "
                         "completion only.",
    "alpaca": "Alpaca columns (`instruction`, `input`, `output`, plus `system` and `history` "
              "for the system prompt and few-shot turns), as LLaMA-Factory's `alpaca` "
              "formatting reads them.",
    "sharegpt": "`conversations` holds `{from, value}` turns (`system`, `human`, `gpt`), as "
                "LLaMA-Factory's and Axolotl's `sharegpt` formats read them.",
}


def render_card(src: Input, split_rows: dict[str, list[dict]], table: pa.Table,
                by_split: dict[str, list[int]], manifest: dict, *, license: str,
                language: list[str], name: str | None, samples: int, repo_id: str | None,
                out: Path, has_funnel: bool) -> str:
    gen = src.generate
    prompt = gen.get("prompt") or {}
    rows = [r for rs in split_rows.values() for r in rs]
    kind = prompt.get("kind") or (rows[0].get("kind") if rows else None)
    title = name or (repo_id.split("/")[-1] if repo_id else out.resolve().name)
    front = {
        "license": license, "language": language,
        "task_categories": ["text-generation"] + (["question-answering"]
                                                  if kind in ("cot", "pot") else []),
        "tags": ["synthetic", "distillation", "distill"] + ([KIND_TAGS[kind]]
                                                             if kind in KIND_TAGS else []),
        "size_categories": [size_category(len(rows))], "pretty_name": title,
        "configs": [{"config_name": "default", "data_files": [
            {"split": s, "path": f"data/{s}-*.parquet"} for s in by_split]}],
    }
    model = gen.get("model") or _first(rows, "model") or "an unrecorded teacher"
    problems = len({problem_of(r) for r in rows})
    split_text = ", ".join(f"{s}: {len(v)}" for s, v in by_split.items())
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {title}", "",
             f"{len(rows)} synthetic {KIND_TAGS.get(kind, kind or 'text')} samples for "
             f"{problems} problems ({split_text}), written by the teacher model `{model}` "
             f"with the prompt file `{prompt.get('name') or _first(rows, 'template') or '?'}`"
             + (", then filtered" if src.filters else "") + ". Made with distill (`distill "
             "generate`" + (", `distill filter`" if src.filters else "") + ", `distill "
             "publish`).", ""]
    lines += _how_made(src, manifest)
    lines += _funnel_section(src, has_funnel)
    lines += _lengths_section(split_rows)
    lines += _columns_section(table, manifest)
    lines += _samples_section(split_rows, samples)
    where = repo_id or str(out)
    first = next(iter(by_split))
    lines += ["## How to load", "", "```python", "from datasets import load_dataset", "",
              f"ds = load_dataset({where!r})",
              f"print(ds)  # splits: {', '.join(by_split)}", f"print(ds[{first!r}][0])", "```",
              "", LOAD_HINTS[manifest["format"]], ""]
    lines += _limitations(src, rows, by_split, license)
    return "\n".join(lines).rstrip() + "\n"


def _first(rows: list[dict], column: str):
    return next((r[column] for r in rows if r.get(column)), None)


def _how_made(src: Input, manifest: dict) -> list[str]:
    gen = src.generate
    prompt, source = gen.get("prompt") or {}, gen.get("source") or {}
    lines = ["## How it was made", ""]
    if gen:
        lines.append(f"- **Teacher:** `{gen.get('model', '?')}`"
                     + (f" (backend `{gen['backend']}`)" if gen.get("backend") else ""))
        if prompt:
            sha = (prompt.get("sha256") or "")[:12]
            lines.append(f"- **Prompt file:** `{prompt.get('name', '?')}` (kind "
                         f"`{prompt.get('kind', '?')}`"
                         + (f", answer format `{prompt['answer_format']}`"
                            if prompt.get("answer_format") else "")
                         + (f", sha256 `{sha}…`" if sha else "") + ")"
                         + (f", from `{prompt['path']}`" if prompt.get("path") else ""))
        if gen.get("sampling"):
            s = ", ".join(f"{k}={v}" for k, v in gen["sampling"].items() if v not in ([], None))
            lines.append(f"- **Sampling:** {s}")
        if source:
            mapping = ", ".join(f"{k}={v}" for k, v in (source.get("fields") or {}).items())
            lines.append(f"- **Source:** `{source.get('path', '?')}`"
                         + (f" (fields: {mapping})" if mapping else ""))
        if gen.get("rows") is not None or gen.get("rows_planned") is not None:
            lines.append(f"- **Generated:** {gen.get('rows', gen.get('rows_planned'))} rows"
                         + (f", finished {gen['finished']}" if gen.get("finished") else ""))
    else:
        lines.append("- The input carries no generate manifest: teacher, prompt and sampling "
                     "are unrecorded.")
    for f in src.filters:
        stages = " → ".join(_stage_text(s) for s in f.get("stages") or []) or "none"
        stages_ = f.get("stages") or [{}]
        lines.append(f"- **Filtered** ({f.get('created', '?')}): {stages_[0].get('seen', '?')} "
                     f"rows in, {f.get('rows', stages_[-1].get('kept', '?'))} kept; stages: "
                     f"{stages}")
    lines.append(f"- **Published** ({manifest['created']}): format `{manifest['format']}`, "
                 + (f"split by problem (`source_id`), test size {manifest['test_size']}, "
                    f"seed {manifest['seed']}" if manifest["split_by"] == "source_id" and
                    manifest["test_size"] else
                    f"split by the column `{manifest['split_by']}`" if manifest["split_by"]
                    else "one split"))
    steps = [f"publish of `{manifest['input']}`"] + [_step(m) for m in src.chain]
    lines += [(f"- **Lineage:** {' ← '.join(steps)}. The whole chain of manifests is in "
              "`manifest.json`."), ""]
    lines += _versions_table([manifest] + src.chain)
    return lines


def _step(m: dict) -> str:
    if m.get("kind") == "generate":
        return f"generate from `{(m.get('source') or {}).get('path', '?')}`"
    return f"{m.get('kind', '?')}" + (f" of `{m['input']}`" if m.get("input") else "")


def _stage_text(stage: dict) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in (stage.get("options") or {}).items())
    return f"`{stage.get('stage', '?')}`" + (f" ({opts})" if opts else "")


def _versions_table(chain: list[dict]) -> list[str]:
    steps = [(m.get("kind", "?"), m.get("versions") or {}) for m in reversed(chain)]
    steps = [(k, v) for k, v in steps if v]
    if not steps:
        return []
    names = list(dict.fromkeys(n for _, v in steps for n in v))
    lines = ["Package versions at each step:", "",
             "| package | " + " | ".join(k for k, _ in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(str(v.get(n, "-")) for _, v in steps) + " |")
    return lines + [""]


def _funnel_section(src: Input, has_funnel: bool) -> list[str]:
    fun = funnel(src.chain)
    if not fun:
        return ["## Filter funnel", "", "This dataset was not filtered by `distill filter`.", ""]
    lines = ["## Filter funnel", "", (f"{fun['rows_in']} generated rows in, "
             f"**{fun['kept']} kept** ({pct(fun['kept'], fun['rows_in'])})."), ""]
    if has_funnel:
        lines += ["![filter funnel](funnel.png)", ""]
    lines += ["| stage | seen | kept | dropped | top drop reasons |", "|---|---:|---:|---:|---|"]
    for s in fun["stages"]:
        reasons = "; ".join(f"{r} ({c})" for r, c in list((s.get("reasons") or {}).items())[:3])
        lines.append(f"| {s['stage']} | {s['seen']} | {s['kept']} | {s['dropped']} | "
                     f"{_cell(reasons) or '-'} |")
    return lines + [""]


def _lengths_section(split_rows: dict[str, list[dict]]) -> list[str]:
    lines = ["## Length distributions", "", "![length histograms](lengths.png)", "",
             "| split | metric | min | median | mean | p90 | max |", "|---|---|---:|---:|---:|---:|---:|"]
    for split, rs in split_rows.items():
        for metric, values in lengths(rs).items():
            d = describe(values)
            lines.append(f"| {split} | {metric} | {d['min']} | {d['median']} | {d['mean']} | "
                         f"{d['p90']} | {d['max']} |")
    return lines + [""]


def _columns_section(table: pa.Table, manifest: dict) -> list[str]:
    lines = ["## Splits and columns", ""]
    if manifest["split_by"] == "source_id":
        lines += [("The test split holds whole problems: every sample of a problem (`source_id`) "
                  "is in the same split."), ""]
    elif manifest["split_by"]:
        lines += [f"Splits follow the column `{manifest['split_by']}` of the source rows.", ""]
    lines += ["| column | type |", "|---|---|"]
    lines += [f"| `{f.name}` | `{f.type}` |" for f in table.schema]
    return lines + [""]


def _samples_section(split_rows: dict[str, list[dict]], k: int) -> list[str]:
    rows = next(iter(split_rows.values()))
    picked, seen = [], set()
    for r in rows:  # one sample per problem first
        if problem_of(r) not in seen and len(picked) < k:
            seen.add(problem_of(r))
            picked.append(r)
    if not picked:
        return []
    lines = ["## Samples", ""]
    for r in picked:
        user = next((m["content"] for m in reversed(r.get("messages") or [])
                     if m["role"] == "user"), r.get("question") or "")
        facts = ", ".join(f"{c} `{r[c]}`" for c in ("gold", "answer", "correct") if r.get(c)
                          is not None)
        lines += [f"### `{r.get('id')}`" + (f" ({facts})" if facts else ""), "", "Prompt:", "",
                  *_fence(_clip(user)), "", "Completion:", "", *_fence(_clip(r.get("completion")
                                                                          or "")), ""]
    return lines


def _limitations(src: Input, rows: list[dict], by_split: dict, license: str) -> list[str]:
    stages = {s.get("stage"): s for f in src.filters for s in f.get("stages") or []}
    model = src.generate.get("model") or _first(rows, "model") or "the teacher"
    items = [(f"Every completion was written by a language model (`{model}`): it can be wrong or "
             "unhelpful, and it carries the teacher's biases and style.")]
    if "verify" in stages:
        items.append("Final answers were checked against gold answers (`verify`); the reasoning "
                     "was not: a right answer can follow flawed steps.")
    elif "execute" in stages:
        items.append("Programs were run and their output kept as the answer (`execute`); "
                     "correctness was checked only where a gold answer existed.")
    else:
        items.append("No stage checked correctness: answers were not compared with gold answers.")
    if "decontaminate" in stages:
        opts = stages["decontaminate"].get("options") or {}
        items.append(f"Decontaminated against {opts.get('against', 'the configured sets')} "
                     "by n-gram overlap; paraphrased benchmark items can remain.")
    else:
        items.append("Not decontaminated: benchmark problems may be in the data.")
    per_problem = max((sum(1 for r in rows if problem_of(r) == p)
                       for p in {problem_of(r) for r in rows}), default=0)
    if per_problem > 1:
        items.append(f"Up to {per_problem} completions per problem: rows are not independent.")
    truncated = sum(1 for r in rows if r.get("finish_reason") == "length")
    if truncated:
        items.append(f"{truncated} rows stopped at the token limit (finish_reason `length`).")
    if len(by_split) == 1:
        items.append("There is no held-out split (use `--test-size` to make one).")
    items.append(f"License field: `{license}`. The teacher's terms of use and the sources' "
                 "licenses also apply to this data; check them before you use or share it.")
    return ["## Known limitations", ""] + [f"- {i}" for i in items] + [""]


def _fence(text: str) -> list[str]:
    ticks = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, ticks + 1)
    return [fence, text, fence]


def _clip(text: str, n: int = 1500) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n} more characters)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

