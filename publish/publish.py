"""``distill publish``: a filtered (or plain) dataset folder becomes a folder ready for the hub.

The output holds ``data/{split}-NNNNN-of-NNNNN.parquet`` (train/test split by problem, so
samples of one problem never straddle splits), ``README.md`` (the dataset card of
``distill.publish.card``, whose YAML ``configs`` make ``datasets.load_dataset(OUT)`` find the
splits; how the data was made, read from the lineage of manifests; the filter funnel; length
plots; samples; limitations), ``funnel.png`` (when the input has one), ``lengths.png`` and
``manifest.json``. ``push`` uploads the finished folder with ``huggingface_hub``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import io
from distill.errors import DistillError
from distill.folders import claim
from distill.publish.card import render_card
from distill.publish.formats import format_table
from distill.publish.lengths import length_plot
from distill.publish.lineage import funnel, resolve
from distill.publish.splits import SPLIT_ORDER, assign_splits

SHARD_ROWS = 100_000
SHARD_NAME = re.compile(r"[\w.]+-\d{5}-of-\d{5}\.parquet")  # what _write_split names


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


def publish(in_dir: str | Path, out: str | Path, *, test_size: float | None = None,
            split_column: str | None = None, format: str = "messages", seed: int = 0,
            license: str = "other", language: list[str] | None = None,
            name: str | None = None, samples: int = 3, metadata: bool = True,
            to_hub: str | None = None, private: bool = False,
            token: str | None = None, data_options: dict | None = None,
            overwrite: bool = False) -> PublishResult:
    """Write ``out`` as a hub-ready dataset folder from ``in_dir`` (see ``distill publish``);
    with ``to_hub``, then push it. The local folder is complete before any push starts.
    ``data_options``: the split, subset, revision and fields ``in_dir`` is read with. ``out``
    must be new, empty or a publish output (``overwrite``: move what else it holds aside), and
    never the input, inside it or around it."""
    src = resolve(in_dir, data_options)
    out = Path(out)
    with claim(out, "publish", "publish", inputs=[in_dir, src.data.folder, *src.data.files],
               overwrite=overwrite):
        manifest = _write(src, in_dir, out, test_size, split_column, format, seed, license,
                          language, name, samples, metadata, to_hub)
    result = PublishResult(out, manifest["splits"], format)
    if to_hub:
        result.url = push(out, to_hub, private=private, token=token)
    return result


def _write(src, in_dir, out: Path, test_size, split_column, format, seed, license, language,
           name, samples, metadata, to_hub) -> dict:
    """Write the folder (new shards, card and plots built in a scratch folder of this writer,
    then moved in, replacing only what an earlier publish wrote); its manifest."""
    rows = src.data.dataset.to_list()
    if not rows:
        raise DistillError(f"{src.data.name}: no rows to publish")
    splits = assign_splits(rows, test_size=test_size, split_column=split_column, seed=seed)
    table = format_table(rows, format, metadata)
    order = sorted(set(splits), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER
                                               else len(SPLIT_ORDER), s))
    by_split = {s: [i for i, x in enumerate(splits) if x == s] for s in order}

    tmp = io.scratch_dir(out)
    (tmp / io.DATA_DIR).mkdir()
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
    length_plot(tmp / "lengths.png", split_rows)
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

    (out / io.DATA_DIR).mkdir(exist_ok=True)
    for old in (out / io.DATA_DIR).iterdir():
        if SHARD_NAME.fullmatch(old.name):  # the shards of an earlier publish, nothing else
            old.unlink()
    for shard in (tmp / io.DATA_DIR).iterdir():
        os.replace(shard, out / io.DATA_DIR / shard.name)
    for f in files + ["funnel.png"]:
        if (tmp / f).exists():
            os.replace(tmp / f, out / f)
        elif (out / f).exists():
            (out / f).unlink()  # a stale funnel from an earlier publish
    io.remove_scratch(tmp)
    return manifest


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
                          commit_message="distill publish", ignore_patterns=[".tmp/*", ".distill.lock"])
    except Exception as e:  # noqa: BLE001 (network, auth, repo id: the client raises many kinds)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise DistillError(f"--to-hub {repo_id}: push failed ({type(e).__name__}: {reason}); "
                           f"{later}") from None
    return str(url)
