"""A recipe in rounds (STaR): ``rounds: N``, or a list of one mapping per round (section
overrides, plus ``problems`` and ``continue`` from round 2 on).

Round 1 is the recipe as written, in ``round-1/``. Round k+1 (in ``round-K/``) samples with
round k's trained student, on the problems no earlier round solved (``problems: all``: every
problem), filters as the recipe says, adds its kept rows to the earlier rounds' (deduped by
question and completion) in ``round-K/union``, and trains on that union from the original
student (``continue: true``: from round k's student). Every round is evaluated on the same
items; ``summary.md`` holds accuracy by round with intervals against the untrained student.
Each round's folder has its own ``state.json``: a rerun resumes per round and per stage.
"""

from __future__ import annotations

import copy
import json
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import io
from distill.errors import DistillError
from distill.log import log
from distill.recipe_check import TASK_KEYS, round_specs, with_overrides


def run_rounds(recipe: dict, out: Path, declared: list[str], from_stage: str | None,
               until_stage: str | None, shared: Path | None = None,
               started: str | None = None) -> dict:
    from distill.recipe import RUNNERS, _run_stages

    summaries, upstream = [], ""
    specs = round_specs(recipe)
    for k, spec in enumerate(specs, 1):
        folder = out / f"round-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        log(f"[round {k}] into {folder}")
        this, runners = with_overrides(recipe, spec), None
        if k > 1:
            this = _later_round(this, spec, out, k)
            problems = partial(_generate_unsolved, first=with_overrides(recipe, specs[0]),
                               earlier=_earlier(out, k), every=spec.get("problems") == "all")
            union = _union_of(out, k - 1)
            runners = {**RUNNERS, "generate": problems,
                       "filter": partial(_filter_union, earlier=union),
                       **{s: partial(_union_first, RUNNERS[s], earlier=union)
                          for s in ("publish", "train")}}
        summary = _run_stages(this, folder, declared, from_stage, until_stage, upstream=upstream,
                              runners=runners, shared=shared, home=out, started=started)
        summaries.append(summary)
        train = summary["stages"].get("train") or {}
        if train.get("status") != "done":  # --until before train: no student to sample with
            break
        upstream = f"{train['fingerprint']}@{train.get('finished')}"
    return _summary(recipe, out, summaries)


def _earlier(out: Path, k: int) -> list[Path]:
    return [out / f"round-{j}" for j in range(1, k)]


def _union_of(out: Path, k: int) -> Path:
    """The rows trained on in round ``k``: round 1's kept rows, later rounds' union."""
    return out / "round-1" / "filter" / "kept" if k == 1 else out / f"round-{k}" / "union"


def _later_round(recipe: dict, spec: dict, out: Path, k: int) -> dict:
    """Round ``k``'s recipe: round k-1's student samples this round's problems file; publish
    and train read the union; eval evaluates the student only (round 1 has the baseline)."""
    recipe, prev, here = copy.deepcopy(recipe), out / f"round-{k - 1}", out / f"round-{k}"
    recipe["teacher"] = {**(recipe.get("teacher") or {}), "model": str(prev / "train")}
    generate = {key: v for key, v in (recipe["generate"] or {}).items()
                if key not in ("source", *TASK_KEYS)}
    recipe["generate"] = {**generate, "source": str(here / "problems.jsonl")}
    for stage in ("publish", "train"):
        if stage in recipe:
            recipe[stage] = {**(recipe[stage] or {}), "data": str(here / "union")}
    if spec.get("continue"):
        recipe["student"] = {**(recipe.get("student") or {}), "model": str(prev / "train")}
    if "eval" in recipe:
        recipe["eval"] = {**{key: v for key, v in (recipe["eval"] or {}).items()
                             if key != "teacher"}, "baseline": False}
    return recipe


def _problems(first: dict, path: Path) -> list[dict]:
    """Round 1's problems (``first``: its recipe): its task slice, written again to ``path``,
    or its source file."""
    from distill.recipe import _task_file, held_out

    cfg = dict(first["generate"] or {})
    path = _task_file(cfg, path, default_split="train", held_out=held_out(first)) \
        if "task" in cfg else cfg.get("source")
    if path is None or not str(path).endswith(".jsonl"):
        raise DistillError(f"rounds: round 2 on samples round 1's problems again: give "
                           f"generate a task or a .jsonl source, not {path}")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if rows and any("id" not in r for r in rows):
        raise DistillError(f"rounds: {path}: every problem needs an 'id' to tell the solved "
                           "ones apart")
    return rows


def solved(folder: Path) -> set[str]:
    """The problems a round solved: those with a correct sample (kept or dropped by the
    filter), or with a kept row when the filter does not verify answers."""
    kept = io.read_rows(folder / "filter" / "kept")
    rows = kept + io.read_rows(folder / "filter" / "dropped")
    if not any("correct" in r for r in rows):
        return {str(r["source_id"]) for r in kept}
    return {str(r["source_id"]) for r in rows if r.get("correct")}


def _generate_unsolved(recipe: dict, out: Path, *, first: dict, earlier: list[Path],
                       every: bool) -> dict:
    from distill.recipe import _generate

    done = set().union(*(solved(f) for f in earlier))
    rows = [r for r in _problems(first, out / "problems.jsonl")
            if every or str(r["id"]) not in done]
    if not rows:
        raise DistillError(f"{out}: every problem is solved after round {len(earlier)}: "
                           "give fewer rounds")
    (out / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log(f"[generate] {len(rows)} problems, {len(done)} solved in earlier rounds"
        + (" (sampled again: problems: all)" if every else ""))
    # the sampler is the last round's student, in this run: rows of an earlier training of it
    # are discarded, not reused
    recipe = {**recipe, "generate": {"regenerate": True, **recipe["generate"]}}
    return {"problems": len(rows), **_generate(recipe, out)}


def _filter_union(recipe: dict, out: Path, *, earlier: Path) -> dict:
    from distill.recipe import _filter

    return {**_filter(recipe, out), **_write_union(out, earlier)}


def _union_first(run, recipe: dict, out: Path, *, earlier: Path) -> dict:
    """``run`` (publish or train), after writing the union if the filter that writes it ran
    in another variant of a sweep (linked here, not run)."""
    if io.read_manifest(out / "union") is None:
        _write_union(out, earlier)
    return run(recipe, out)


def _write_union(out: Path, earlier: Path) -> dict:
    """``out/union``: the earlier rounds' rows and this round's kept rows that are new (same
    question and completion: a repeat). A new row whose id an earlier row has (the same
    problem and sample index) gets the round in its id."""
    before = _table(earlier)
    new = _table(out / "filter" / "kept")
    key = "question" if "question" in before.column_names and "question" in new.column_names \
        else "source_id"
    seen = set(zip(before.column(key).to_pylist(), before.column("completion").to_pylist()))
    ids = set(before.column("id").to_pylist())
    keep, renamed = [], []
    for i, row in enumerate(zip(new.column(key).to_pylist(), new.column("completion").to_pylist(),
                                new.column("id").to_pylist())):
        if row[:2] in seen:
            continue
        seen.add(row[:2])
        keep.append(i)
        renamed.append(row[2] if row[2] not in ids else f"{row[2]}-{out.name}")
    added = new.take(pa.array(keep, pa.int64()))
    added = added.set_column(added.column_names.index("id"), "id", pa.array(renamed, pa.string()))
    union = pa.concat_tables([before, added], promote_options="default")
    manifest = {"kind": "union", "created": io.now(), "rows": union.num_rows,
                "new_rows": added.num_rows, "inputs": [str(earlier), str(out / "filter/kept")]}
    (out / "union").mkdir(exist_ok=True)
    io.write_dataset(out / "union", union, manifest, shard_rows=10_000)
    log(f"[union] {added.num_rows} new rows, {union.num_rows} in all -> {out / 'union'}")
    return {"new_rows": added.num_rows, "union_rows": union.num_rows}


def _table(folder: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in io.shard_paths(folder)]
    if not tables:
        raise DistillError(f"{folder}: no rows to build the next round's union from")
    return pa.concat_tables(tables, promote_options="default")


def _summary(recipe: dict, out: Path, summaries: list[dict]) -> dict:
    """``summary.md``/``.json``: a row per round and the accuracy by round, against the
    untrained student (else round 1), from ``eval compare`` (``rounds/``)."""
    from distill.eval.compare import compare

    dirs, labels = [], []
    baseline = out / "round-1" / "eval" / "baseline"
    if (baseline / "metrics.json").exists():
        dirs, labels = [baseline], ["untrained"]
    for k, s in enumerate(summaries, 1):
        if (s["stages"].get("eval") or {}).get("status") == "done":
            dirs.append(out / f"round-{k}" / "eval" / "student")
            labels.append(f"round {k}")
    result = compare(dirs, out / "rounds", labels=labels) if dirs else {"runs": []}
    accuracy = {r["run"]: r for r in result["runs"]}
    lines = [f"# Run summary: {recipe.get('name') or out.name}, {len(summaries)} rounds", "",
             ("| round | problems sampled | solved | new rows | rows trained on | accuracy "
              f"[95% CI] | vs {labels[0] if labels else '-'} [95% CI] | report |"),
             "|---|---:|---:|---:|---:|---|---|---|"]
    if "untrained" in accuracy:
        lines.append(f"| untrained | | | | | {_ci(accuracy['untrained'], 'accuracy')} | | |")
    for k, s in enumerate(summaries, 1):
        stages = {name: (info.get("result") or {}) for name, info in s["stages"].items()}
        gen, kept = stages.get("generate", {}), stages.get("filter", {})
        row = accuracy.get(f"round {k}", {})
        problems = gen.get("problems", (gen.get("rows") or 0) // _n(recipe) or "")
        filtered = (out / f"round-{k}" / "filter" / "kept" / io.MANIFEST).exists()
        count = len(solved(out / f"round-{k}")) if filtered else ""
        lines.append(f"| {k} | {problems} | {count} | "
                     f"{kept.get('new_rows', kept.get('kept', ''))} | "
                     f"{kept.get('union_rows', kept.get('kept', ''))} | "
                     f"{_ci(row, 'accuracy')} | {_ci(row, 'difference')} | "
                     f"[round-{k}/summary.md](round-{k}/summary.md) |")
    if dirs:
        lines += ["", (f"Intervals: accuracy, Wilson 95%; against {labels[0]}, paired "
                  "bootstrap over the same items ([rounds/compare.md](rounds/compare.md))."), "",
                  "![accuracy by round](rounds/accuracy.png)"]
    summary = {"recipe": recipe.get("name"), "out": str(out), "created": io.now(),
               "rounds": summaries, "by_round": result["runs"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    log(f"summary: {out / 'summary.md'}")
    return summary


def _n(recipe: dict) -> int:
    return int((recipe.get("generate") or {}).get("n") or 1)


def _ci(row: dict, key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return ""
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if key == "difference" else \
        f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
