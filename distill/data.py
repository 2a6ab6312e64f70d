"""The one data reader: every command that takes data (``--data``, generate's problems) reads it
here, as a ``datasets.Dataset`` (Arrow, memory-mapped), with where-info for error messages.

``read`` accepts:

* a distill dataset folder (``data/part-*.parquet``) or a filter output (its ``kept/``);
* a published folder (``data/{split}-*.parquet``) or any folder of data files whose names say
  their split (``--split``, default train), and a ``save_to_disk`` folder (a DatasetDict:
  ``--split``);
* a Parquet, jsonl, json, csv or txt (one item per line) file, a folder or a glob of them;
* a hub dataset id (``--split``, ``--subset``, ``--revision``).

``--field TARGET=COLUMN`` makes column ``TARGET`` read ``COLUMN`` (``fields``). ``conversations``
maps the conversational formats users have (messages ending in an assistant turn, TRL
prompt/completion, alpaca, sharegpt) to distill's row: ``messages`` (the prompt) and
``completion``. A file that cannot be read gives one line naming it (``DistillError``).
"""

from __future__ import annotations

import csv
import glob
import json
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from distill import io
from distill.errors import DistillError

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".txt")
NOT_DATA = {"manifest.json", "report.json", "dataset_info.json", "state.json"}


@dataclass
class DataOptions:
    """The data flags, the same in every command that takes data (``flags.add_data_flags``)."""

    split: str = field(default="train", metadata={
        "help": "Split of a published folder, a save_to_disk DatasetDict or a hub dataset."})
    subset: str | None = field(default=None, metadata={
        "help": "Config (subset) name of a hub dataset."})
    revision: str | None = field(default=None, metadata={
        "help": "Branch, tag or commit of a hub dataset."})
    field: list[str] = field(default_factory=list, metadata={
        "help": "TARGET=COLUMN: column TARGET (a template variable for generate) reads COLUMN "
        "of the data, e.g. completion=response (repeatable)."})


def parse_fields(specs: list[str] | dict | None) -> dict[str, str]:
    """``["completion=response"]`` (flags) or ``{"completion": "response"}`` (a recipe) ->
    ``{"completion": "response"}``."""
    if isinstance(specs, dict):
        return {str(k): str(v) for k, v in specs.items()}
    out = {}
    for spec in specs or []:
        target, sep, name = spec.partition("=")
        if not sep or not target or not name:
            raise DistillError(f"--field takes TARGET=SOURCE_FIELD (e.g. completion=response), "
                               f"got {spec!r}")
        out[target] = name
    return out


def options_of(args) -> dict:
    """``read``'s keyword arguments from parsed data flags (argparse or ``DataOptions``)."""
    return {"split": args.split, "subset": args.subset, "revision": args.revision,
            "fields": parse_fields(args.field)}


@dataclass
class Data:
    """What was read: the rows, what the user named (``name``), its layout (``kind``), the
    distill folder whose manifest describes it (if any) and the files behind it."""

    dataset: object  # datasets.Dataset
    name: str
    kind: str
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)
    split: str | None = None
    _offsets: list[int] | None = None
    _lines: dict = field(default_factory=dict)

    @property
    def manifest(self) -> dict | None:
        return io.read_manifest(self.folder) if self.folder else None

    def where(self, i: int) -> str:
        """Where row ``i`` comes from: ``file:line`` for line-based files, else ``file[row]``."""
        if not self.files:
            return f"{self.name}:{self.split}[{i}]" if self.kind == "hub" else f"{self.name}[{i}]"
        if self._offsets is None:
            self._offsets = [0]
            for f in self.files:
                self._offsets.append(self._offsets[-1] + len(_line_numbers(f, self._lines)))
        k = max(j for j, start in enumerate(self._offsets[:-1]) if start <= i)
        f, j = self.files[k], i - self._offsets[k]
        lines = _line_numbers(f, self._lines)
        return f"{f}:{lines[j]}" if f.suffix in (".jsonl", ".csv", ".txt") else f"{f}[{j}]"


def read(path: str | Path, *, split: str = "train", subset: str | None = None,
         revision: str | None = None, fields: dict[str, str] | None = None) -> Data:
    """The rows of ``path`` (see the module docstring), with ``fields`` mapped."""
    with quiet():
        return map_fields(_read(str(path), split, subset, revision), fields or {})


@contextmanager
def quiet():
    """No ``datasets`` progress bars while reading (distill prints its own lines)."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


def map_fields(data: Data, fields: dict[str, str]) -> Data:
    """Column ``target`` reads column ``name`` for each ``target=name`` (the source column
    stays)."""
    ds = data.dataset
    for target, name in fields.items():
        if name not in ds.column_names:
            where = data.where(0) if len(ds) else data.name
            raise DistillError(f"{where}: --field {target}={name}: the data has no column "
                               f"{name!r}; it has: {', '.join(ds.column_names)}")
    if fields:
        ds = ds.map(lambda b: {t: b[n] for t, n in fields.items()}, batched=True)
    data.dataset = ds
    return data


def _read(source: str, split: str, subset: str | None, revision: str | None) -> Data:
    path = Path(source)
    if path.is_dir():
        return _read_dir(path, split)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DistillError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                               f"{', '.join(SUFFIXES)}, a folder of them or a dataset folder")
        return _read_files(source, [path], "file")
    if glob.has_magic(source):
        files = [Path(f) for f in sorted(glob.glob(source, recursive=True))
                 if Path(f).suffix.lower() in SUFFIXES]
        if not files:
            raise DistillError(f"{source}: the pattern matches no {'/'.join(SUFFIXES)} file")
        return _read_files(source, files, "files")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return _read_hub(source, split, subset, revision)
    raise DistillError(f"{source}: no such file or folder")


def _read_dir(path: Path, split: str) -> Data:
    if any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        return _read_saved(path, split)
    for folder, kind in ((path / "kept", "filter output"), (path, "dataset")):
        if io.shard_paths(folder):
            return _read_files(str(path), io.shard_paths(folder), kind, folder=folder)
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:  # split -> files, by the file names (datasets' own conventions)
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except Exception:  # noqa: BLE001 (datasets raises EmptyDatasetError and others)
        found = {}
    by_split = {}
    for name, names in found.items():
        files = sorted(f for f in map(Path, names) if _data_file(path, f))
        if files:
            by_split[str(name)] = files
    if not by_split:
        raise DistillError(f"{path}: no dataset here: expected a distill dataset folder "
                           "(data/part-*.parquet), a filter output (kept/), a published folder "
                           f"(data/train-*.parquet), a save_to_disk folder or "
                           f"{'/'.join(SUFFIXES)} files")
    if split not in by_split:
        raise DistillError(f"{path}: no split {split!r}; it has: {', '.join(by_split)} "
                           "(pick one with --split)")
    kind = "published dataset" if (path / io.MANIFEST).exists() else "files"
    data = _read_files(str(path), by_split[split], kind, folder=path if kind != "files" else None)
    data.split = split
    return data


def _data_file(root: Path, f: Path) -> bool:
    """A data file of the folder ``root``: not hidden, not a manifest or report, and not inside
    another dataset (a subfolder with its own manifest)."""
    parts = f.resolve().relative_to(root.resolve()).parts
    return (f.is_file() and f.suffix.lower() in SUFFIXES and f.name not in NOT_DATA
            and not any(p.startswith(".") for p in parts)
            and not any((root.joinpath(*parts[:i]) / io.MANIFEST).exists()
                        for i in range(1, len(parts))))


def _read_saved(path: Path, split: str) -> Data:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 (corrupt arrow files raise several types)
        raise DistillError(f"{path}: unreadable save_to_disk folder: {_first_line(e)}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DistillError(f"{path}: no split {split!r}; it has: {', '.join(ds)} "
                               "(pick one with --split)")
        ds = ds[split]
    return Data(ds, str(path), "save_to_disk", split=split)


def _read_files(name: str, files: list[Path], kind: str, folder: Path | None = None) -> Data:
    import datasets

    suffixes = {f.suffix.lower() for f in files}
    if len(suffixes) > 1:
        raise DistillError(f"{name}: mixes {', '.join(sorted(suffixes))} files; read one kind "
                           "at a time (a glob such as DIR/*.jsonl)")
    suffix = suffixes.pop()
    literal = [glob.escape(str(f)) for f in files]  # `datasets` globs them: "[" in a folder name
    try:
        if suffix in (".json", ".txt"):
            parts = [_read_small(f) for f in files]
            ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        elif suffix == ".parquet":
            features = _parquet_features(files)
            if _parquet_rows(files):
                ds = datasets.load_dataset("parquet", data_files=literal,
                                           split="train", features=features)
            else:  # load_dataset refuses a split of 0 rows; the schema is all there is
                ds = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
        elif suffix == ".csv":
            for f in files:
                _check_utf8(f)
            with open(files[0], newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            features = datasets.Features({c: datasets.Value("string") for c in header})
            ds = datasets.load_dataset("csv", data_files=literal, split="train",
                                       features=features, keep_default_na=False)
        else:
            for f in files:
                _check_utf8(f)  # pyarrow's JSON reader lets bad bytes through
            ds = datasets.load_dataset("json", data_files=literal, split="train")
    except DistillError:
        raise
    except Exception as e:  # noqa: BLE001 (the loaders raise many types): name the file
        for f in files:
            _check_file(f)
        if suffix != ".parquet" and not any(_text(f).strip() for f in files):
            return Data(datasets.Dataset.from_dict({}), name, kind, folder=folder, files=files)
        raise DistillError(f"{name}: cannot be read: {_first_line(e)}") from None
    return Data(ds, name, kind, folder=folder, files=files)


def _parquet_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _parquet_features(files: list[Path]):
    """One schema for shards whose columns differ (a column all null in one shard)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except Exception as e:  # noqa: BLE001 (pyarrow raises several types for corrupt files)
            raise DistillError(f"{f}: unreadable Parquet file: {_first_line(e)}") from None
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, ValueError) as e:
        raise DistillError(f"{files[0].parent}: its Parquet files disagree on a column's type "
                           f"({_first_line(e)}); read them one at a time") from None
    return datasets.Features.from_arrow_schema(schema.remove_metadata())


def _read_small(path: Path):
    """A .json file (a list of objects, or ``{"key": [objects]}``) or a .txt file (one item per
    line, as ``topic`` and ``text``; ``#`` lines are comments), read whole."""
    import datasets

    text = _text(path)
    if path.suffix.lower() == ".txt":
        items = [s.strip() for s in text.splitlines()
                 if s.strip() and not s.lstrip().startswith("#")]
        return datasets.Dataset.from_dict({"topic": items, "text": items})
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DistillError(f"{path}: expected a list of objects")
    return datasets.Dataset.from_list(data)


def _text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DistillError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                           "convert the file to UTF-8") from None


def _check_utf8(path: Path, chunk: int = 1 << 20) -> None:
    """One line naming the file and line where ``path`` stops being UTF-8 (read in chunks)."""
    import codecs

    decoder, lines, done = codecs.getincrementaldecoder("utf-8")(), 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                line = lines + block[:max(e.start, 0)].count(b"\n") + 1
                raise DistillError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte "
                                   f"{done + e.start}); convert the file to UTF-8") from None
            lines, done = lines + block.count(b"\n"), done + len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise DistillError(f"{path}:{lines + 1}: not UTF-8 text ({e.reason} at the end); "
                               "convert the file to UTF-8") from None


def _check_file(path: Path) -> None:
    """Raise the one-line reason ``path`` cannot be read, if it is one we can name."""
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        try:
            pq.read_table(path)
        except Exception as e:  # noqa: BLE001
            raise DistillError(f"{path}: unreadable Parquet file: {_first_line(e)}") from None
        return
    text = _text(path)
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DistillError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DistillError(f"{path}:{n}: each line must be a JSON object")


def _line_numbers(path: Path, cache: dict) -> list:
    """Per row of ``path``: its line number (line-based files) or its index."""
    if path not in cache:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            cache[path] = [n for n, s in enumerate(_text(path).splitlines(), 1) if s.strip()]
        elif suffix == ".txt":
            cache[path] = [n for n, s in enumerate(_text(path).splitlines(), 1)
                           if s.strip() and not s.lstrip().startswith("#")]
        elif suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cache[path] = [reader.line_num for _ in reader]
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            cache[path] = range(pq.read_metadata(path).num_rows)
        else:
            cache[path] = range(len(_read_small(path)))
    return cache[path]


def _read_hub(repo: str, split: str, subset: str | None, revision: str | None) -> Data:
    import datasets

    try:
        ds = datasets.load_dataset(repo, subset, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 (the hub and the loaders raise many types)
        raise DistillError(
            f"{repo}: not a local file or folder, and the hub could not be reached or has no "
            f"such dataset ({type(e).__name__}: {_first_line(e)}); pass a local path instead "
            "(a file, a folder, or a copy saved with save_to_disk or hf download)") from None
    return Data(ds, repo, "hub", split=split)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


# --- generate's problems ------------------------------------------------------------------

@dataclass
class SourceRow:
    fields: dict
    where: str


def load_source(source: str, *, fields: dict[str, str] | None = None, limit: int | None = None,
                shuffle: bool = False, seed: int = 0, split: str = "train",
                subset: str | None = None, revision: str | None = None) -> list[SourceRow]:
    """Generate's problems as rows with where-info; ``fields`` maps template variables to
    source columns (``{"question": "problem"}``)."""
    data = read(source, split=split, subset=subset, revision=revision, fields=fields)
    manifest = data.manifest or {}
    if manifest.get("kind") == "generate" and (manifest.get("prompt") or {}).get(
            "kind") == "problem":
        raise DistillError(
            f"{source}: its new problems are still inside the completions of prompt "
            f"{manifest['prompt'].get('name')!r} (its questions are the seeds'); read them out "
            f"first with `distill filter --data {source} --out PROBLEMS` (the problem preset), "
            "then generate from PROBLEMS")
    n = len(data.dataset)
    if not n:
        raise DistillError(f"{source}: the source is empty")
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    order = order[:limit] if limit is not None else order
    rows = data.dataset.select(order).to_list()
    return [SourceRow(r, data.where(i)) for r, i in zip(rows, order)]


# --- conversational formats -> distill's row ------------------------------------------------

FORMAT_COLUMNS = {  # format -> the columns it replaces with messages + completion
    "prompt-completion": ("prompt",), "messages": (), "alpaca": (
        "instruction", "input", "output", "system", "history"),
    "sharegpt": ("conversations",), "question": ()}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}


def conversations(data: Data, required: bool = True) -> Data:
    """``data`` as distill's row: ``messages`` (the prompt, a list of ``{role, content}``) and
    ``completion`` (the assistant's text), mapped from the format it is in; other columns
    stay (no rows: nothing to map). No format to map: one line naming the columns found, or
    (``required=False``) the data as it is."""
    columns = data.dataset.column_names
    fmt = detect_format(columns, data.dataset.features) if len(data.dataset) else "distill"
    if fmt is None and not required:
        return data
    if fmt is None:
        raise DistillError(
            f"{data.name}: no conversation to read: columns found: "
            f"{', '.join(columns) or 'none'}; "
            "expected messages + completion (distill), messages ending in an assistant turn, "
            "prompt + completion (TRL), instruction + output (alpaca), conversations "
            "(sharegpt) or question + completion; map yours with --field, e.g. "
            "--field completion=response --field question=problem")
    if fmt == "distill":
        return data
    convert = {"prompt-completion": _from_prompt_completion, "messages": _from_messages,
               "alpaca": _from_alpaca, "sharegpt": _from_sharegpt,
               "question": _from_question}[fmt]
    with quiet():
        data.dataset = data.dataset.map(
            convert, remove_columns=[c for c in FORMAT_COLUMNS[fmt] if c in columns])
    return data


def detect_format(columns: list[str], features) -> str | None:
    """The format of a dataset with these columns: distill, prompt-completion, messages,
    alpaca, sharegpt, question (question + plain completion), or None."""
    cols = set(columns)
    plain = {"completion"} <= cols and not _is_list(features["completion"])
    if {"messages", "completion"} <= cols and plain:
        return "distill"
    if {"prompt", "completion"} <= cols:
        return "prompt-completion"
    if "messages" in cols:
        return "messages"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if "conversations" in cols:
        return "sharegpt"
    if {"question", "completion"} <= cols and plain:
        return "question"
    return None


def _is_list(feature) -> bool:
    import datasets

    return isinstance(feature, (list, datasets.Sequence, datasets.LargeList, datasets.List))


def _turns(messages) -> list[dict]:
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages or []]


def _split_last(turns: list[dict]) -> dict:
    """Prompt turns + the final assistant turn's text (None when the last turn is not the
    assistant's: the row then has no completion and training counts it as bad)."""
    if turns and turns[-1]["role"] == "assistant":
        return {"messages": turns[:-1], "completion": turns[-1]["content"]}
    return {"messages": turns, "completion": None}


def _from_messages(row: dict) -> dict:
    return _split_last(_turns(row["messages"]))


def _from_prompt_completion(row: dict) -> dict:
    prompt, completion = row["prompt"], row["completion"]
    messages = _turns(prompt) if isinstance(prompt, list) else [
        {"role": "user", "content": prompt}]
    if isinstance(completion, list):
        completion = "".join(t["content"] or "" for t in _turns(completion)
                             if t["role"] == "assistant") or None
    return {"messages": messages, "completion": completion}


def _from_alpaca(row: dict) -> dict:
    """The inverse of ``publish --format alpaca``: system, history turns, then the
    instruction (and input) as the last user turn."""
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for user, assistant in row.get("history") or []:
        messages += [{"role": "user", "content": user},
                     {"role": "assistant", "content": assistant}]
    text = "\n\n".join(x for x in (row["instruction"], row.get("input")) if x)
    return {"messages": messages + [{"role": "user", "content": text}],
            "completion": row["output"]}


def _from_sharegpt(row: dict) -> dict:
    return _split_last([{"role": SHAREGPT_ROLES.get(t.get("from"), t.get("from")),
                         "content": t.get("value")} for t in row["conversations"] or []])


def _from_question(row: dict) -> dict:
    return {"messages": [{"role": "user", "content": row["question"]}],
            "completion": row["completion"]}
