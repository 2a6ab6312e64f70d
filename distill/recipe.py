"""``distill run RECIPE.yaml``: the stages a recipe declares, each in its own folder of the
run folder: evolve (new problems from the seed problems) -> generate -> filter -> publish ->
train -> eval (the student and its untrained baseline), then ``summary.md`` / ``summary.json``.

A stage is skipped on a rerun when it finished with the same settings as now (its own
settings and those of the stages before it); an unfinished stage resumes, since every stage
resumes by itself (generate keeps its rows, train its checkpoints, eval its generations).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from pathlib import Path

import yaml

from distill import io
from distill.data import parse_fields
from distill.errors import DistillError
from distill.folders import lock
from distill.log import log
from distill.recipe_check import EVOLVE_DEFAULTS, SEED_KEYS, TASK_KEYS, check_recipe

STAGES = ("evolve", "generate", "filter", "publish", "train", "eval")
STATE = "state.json"


def load_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise DistillError(f"recipe {path} not found")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DistillError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML") from None
    if not isinstance(recipe, dict):
        raise DistillError(f"{path}: a recipe is a YAML mapping")
    unknown = set(recipe) - set(STAGES) - set(FIELDS)
    if unknown:
        close = difflib.get_close_matches(min(unknown), [*STAGES, *FIELDS], n=1)
        raise DistillError(f"{path}: unknown recipe field {min(unknown)!r}; "
                           + (f"did you mean {close[0]!r}? " if close else "") + "allowed: "
                           f"{', '.join(FIELDS)}, {', '.join(STAGES)}")
    check_recipe(recipe, path)
    return recipe


FIELDS = ("name", "out", "teacher", "student", "rounds", "sweep")


def run_recipe(path: str | Path, out: str | Path | None = None, *, from_stage: str | None = None,
               until_stage: str | None = None, sweep: list[str] | None = None) -> dict:
    """Run (or resume) a recipe; returns the run summary. ``rounds`` in the recipe runs it
    round by round (``distill.rounds``); ``sweep`` (``KEY=V1,V2`` strings, added to the
    recipe's ``sweep:``) runs one variant per value (``distill.sweep``)."""
    recipe = load_recipe(path)
    out = Path(out or recipe.get("out") or Path("runs") / Path(path).stem)
    declared = [s for s in STAGES if s in recipe]
    for flag, stage in (("--from", from_stage), ("--until", until_stage)):
        if stage is not None and stage not in declared:
            raise DistillError(f"{flag} {stage}: the recipe's stages are {', '.join(declared)}")
    from distill.sweep import sweep_variants

    variants = sweep_variants(recipe, sweep or [], path)
    out.mkdir(parents=True, exist_ok=True)
    with lock(out, "run"):  # one run at a time in a run folder
        if variants:
            from distill.sweep import run_sweep

            return run_sweep(variants, out, from_stage, until_stage)
        return run_one(recipe, out, declared, from_stage, until_stage)


def run_one(recipe: dict, out: Path, declared: list[str], from_stage: str | None,
            until_stage: str | None, shared: Path | None = None,
            started: str | None = None) -> dict:
    """One recipe into ``out``: its stages, or its rounds when it has ``rounds``."""
    if recipe.get("rounds") is not None:
        from distill.rounds import run_rounds

        return run_rounds(recipe, out, declared, from_stage, until_stage, shared, started)
    return _run_stages(recipe, out, declared, from_stage, until_stage, shared=shared,
                       started=started)


def _run_stages(recipe: dict, out: Path, declared: list[str], from_stage: str | None,
                until_stage: str | None, *, upstream: str = "", runners: dict | None = None,
                shared: Path | None = None, home: Path | None = None,
                started: str | None = None) -> dict:
    """The stages into ``out``. ``upstream`` is folded into the first stage's fingerprint (a
    round's sampler); ``runners`` replace ``RUNNERS``; a stage that finished with the same
    fingerprint in a run folder under ``shared`` (a sweep's variants) is linked, not rerun
    (a stage ``from_stage`` reruns: when it finished there since ``started``). Paths under
    ``home`` (a rounds run's folder) count relative to it in fingerprints."""
    state = json.loads((out / STATE).read_text()) if (out / STATE).exists() else {}
    forced = False
    for stage in declared:
        forced = forced or stage == from_stage
        settings = {"stage": recipe[stage], "teacher": recipe.get("teacher"),
                    "student": recipe.get("student"), "upstream": upstream}
        if stage == "evolve":  # its seeds are the generate section's problems
            settings["seeds"] = {k: v for k, v in (recipe["generate"] or {}).items()
                                 if k in SEED_KEYS}
        if stage in ("evolve", "generate") and (held := held_out_slice(recipe)) is not None:
            settings["held_out"] = held  # the problems it leaves out
        text = json.dumps(settings, sort_keys=True, default=str)
        text = text.replace(str(home), "<home>") if home is not None else text
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        upstream = fingerprint
        done = state.get(stage, {})
        own = (out / stage).exists() and not (out / stage).is_symlink()  # resumes, not shared
        twin = None if own or shared is None else \
            _finished_in(shared, out, stage, fingerprint, since=started if forced else None)
        if not forced and done.get("fingerprint") == fingerprint and done.get("status") == "done":
            log(f"[{stage}] finished before with these settings: skipped")
        elif twin is not None:
            folder, record = twin
            _link(out / stage, folder / stage)
            log(f"[{stage}] finished in {folder} with these settings: shared")
            state[stage] = {**record, "shared": str(folder / stage)}
            _save_state(out, state)
        else:
            log(f"[{stage}] running into {out / stage}")
            if (out / stage).is_symlink():  # shared before: this run's own folder from now on
                (out / stage).unlink()
            start = time.perf_counter()
            state[stage] = {"fingerprint": fingerprint, "status": "running"}
            _save_state(out, state)
            try:
                result = (runners or RUNNERS)[stage](recipe, out)
            except BaseException as e:  # the reason on record, then the error as it was
                reason = "interrupted" if isinstance(e, KeyboardInterrupt) else \
                    str(e) or type(e).__name__
                state[stage] = {"fingerprint": fingerprint, "status": "failed", "error": reason,
                                "seconds": round(time.perf_counter() - start, 1)}
                _save_state(out, state)
                raise
            state[stage] = {"fingerprint": fingerprint, "status": "done", "result": result,
                            "seconds": round(time.perf_counter() - start, 1),
                            "finished": io.now()}
            _save_state(out, state)
        if stage == until_stage:
            break
    summary = _summary(recipe, out, state)
    log(f"summary: {out / 'summary.md'}")
    return summary


def _finished_in(root: Path, out: Path, stage: str, fingerprint: str,
                 since: str | None) -> tuple[Path, dict] | None:
    """A run folder in ``root`` (a variant, or a round of one; not ``out``) whose ``stage``
    finished with ``fingerprint`` in its own folder (not one it shares), with its record."""
    for path in sorted([*root.glob(f"*/{STATE}"), *root.glob(f"*/round-*/{STATE}")]):
        record = json.loads(path.read_text()).get(stage) or {}
        if (path.parent.resolve() != out.resolve() and record.get("status") == "done"
                and record.get("fingerprint") == fingerprint and "shared" not in record
                and (since is None or record.get("finished", "") >= since)):
            return path.parent, record
    return None


def _link(link: Path, target: Path) -> None:
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path(os.path.relpath(target, link.parent)), target_is_directory=True)


def _task_file(cfg: dict, path: Path, default_split: str | None,
               held_out: set[str] = frozenset()) -> Path:
    """Write a slice of a task (``task``, ``split``, ``subset``, ``revision``, ``field``,
    ``shuffle``, ``shuffle_seed``, ``offset``, ``limit``, popped from ``cfg``) to a jsonl
    file. The same slicing on both sides keeps training problems and held-out eval items
    apart; a problem whose text is a ``held_out`` key (``_question_key``) is left out too."""
    rows = _task_rows(cfg, default_split)
    kept = [r for r in rows if _question_key(r["question"]) not in held_out]
    if rows and not kept:
        raise DistillError(f"recipe: all {len(rows)} problems of the {path.stem} slice are "
                           "held-out eval items or repeat one; give it other items "
                           "(offset/limit) than eval's")
    if len(kept) < len(rows):
        log(f"[{path.stem}] {len(rows) - len(kept)} of {len(rows)} problems left out: "
            "the text of a held-out eval item")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**r, "gold": r["answer"]}) + "\n" for r in kept))
    return path


def _task_rows(cfg: dict, default_split: str | None) -> list[dict]:
    import random

    from distill.tasks import load_task

    rows = load_task(cfg.pop("task"), split=cfg.pop("split", default_split),
                     subset=cfg.pop("subset", None), revision=cfg.pop("revision", None),
                     fields=parse_fields(cfg.pop("field", None)))
    if cfg.pop("shuffle", False):
        random.Random(cfg.pop("shuffle_seed", 0)).shuffle(rows)
    start, limit = cfg.pop("offset", 0), cfg.pop("limit", None)
    return rows[start:None if limit is None else start + limit]


def held_out_slice(recipe: dict) -> dict | None:
    """The eval section's task slice (``offset``/``shuffle``: held-out items), else None."""
    cfg = recipe.get("eval") or {}
    if not {"offset", "shuffle"} & set(cfg):
        return None
    keys = (*TASK_KEYS, "subset", "revision", "field")
    return {**{k: cfg[k] for k in keys if k in cfg},
            "task": cfg.get("data") or cfg.get("task", "gsm8k")}


def held_out(recipe: dict) -> set[str]:
    """The held-out eval items' question keys: generate and evolve leave out problems with
    the same text (MAWPS, for one, repeats problems under other ids)."""
    cfg = held_out_slice(recipe)
    return set() if cfg is None else \
        {_question_key(r["question"]) for r in _task_rows(cfg, default_split=None)}


def _question_key(question: str) -> str:
    """A question's words and numbers, run together: case, spacing, punctuation, apostrophes
    and thousands separators aside ("Fred 's 6,359 cards ." = "Fred's 6359 cards.")."""
    from distill.filters.decontaminate import normalize_words

    return "".join(normalize_words(question))


def _generate(recipe: dict, out: Path) -> dict:
    cfg = dict(recipe["generate"] or {})
    if "evolve" in recipe:  # the problems evolve kept (and the seeds), as the source file
        source = _evolved_problems(recipe, out)
        cfg = {k: v for k, v in cfg.items() if k not in SEED_KEYS}
    else:
        source = _problem_source(recipe, cfg, out / "problems.jsonl")
    result = _teacher_generate(recipe, cfg.pop("prompt", "gsm8k-cot"), source,
                               out / "generate", **cfg)
    return {"rows": result.rows_total, "generated": result.rows_written,
            "tokens": result.tokens, "finish_reasons": result.finish_reasons}


def _problem_source(recipe: dict, cfg: dict, path: Path) -> str | Path:
    """The generate section's problems (``cfg``: its keys, those that pick them popped): its
    source file, or its task slice written to ``path`` less the held-out items."""
    source = cfg.pop("source", None)
    if "task" in cfg:
        source = _task_file(cfg, path, default_split="train", held_out=held_out(recipe))
    if source is None:
        raise DistillError("recipe generate: give a source (a file) or a task (e.g. gsm8k)")
    return source


def _teacher_generate(recipe: dict, prompt: str, source: str | Path, folder: Path, **options):
    """``distill generate`` with the recipe's teacher."""
    from distill.datagen import generate

    teacher = recipe.get("teacher") or {}
    return generate(prompt, str(source), str(folder), model=teacher.get("model"),
                    backend=teacher.get("backend", "auto"), base_url=teacher.get("base_url"),
                    **options)


def _evolve(recipe: dict, out: Path) -> dict:
    """New problems from the generate section's problems (the seeds, read as generate reads
    them): a problem prompt writes them into ``evolve/generate``, a filter (the ``problem``
    preset unless ``filter`` names another) reads them out into ``evolve/filter``."""
    from distill.filters.pipeline import run_filter

    cfg = {**EVOLVE_DEFAULTS, **(recipe["evolve"] or {})}
    cfg.pop("keep_seeds")
    prompt, config = cfg.pop("prompt"), cfg.pop("filter")
    seeds = {k: v for k, v in (recipe["generate"] or {}).items() if k in SEED_KEYS}
    source = _problem_source(recipe, seeds, out / "evolve" / "seeds.jsonl")
    result = _teacher_generate(recipe, prompt, source, out / "evolve" / "generate",
                               **seeds, **cfg)
    kept = run_filter(out / "evolve" / "generate", out / "evolve" / "filter", config=config)
    return {"seeds": len(_seeds(out)), "rows": result.rows_total,
            "generated": result.rows_written, "tokens": result.tokens,
            "new_problems": kept.kept, "dropped": kept.dropped}


def _seeds(out: Path) -> list[dict]:
    """The seed problems as evolve read them (each row's ``source``), with their id and gold."""
    seeds: dict[str, dict] = {}
    for row in io.read_rows(out / "evolve" / "generate"):
        seeds.setdefault(row["source_id"], {**json.loads(row["source"]), "id": row["source_id"],
                                            "gold": row["gold"]})
    return list(seeds.values())


def _evolved_problems(recipe: dict, out: Path) -> Path:
    """``problems.jsonl``: the new problems evolve kept, with their provenance, then (unless
    ``keep_seeds: false``) the seeds with their gold."""
    columns = ("id", "question", "gold", "parent_id", "parent_question", "evolved_by")
    rows = [{k: r.get(k) for k in columns}
            for r in io.read_rows(out / "evolve" / "filter" / "kept")]
    if {**EVOLVE_DEFAULTS, **(recipe["evolve"] or {})}["keep_seeds"]:
        rows += _seeds(out)
    if not rows:
        raise DistillError(f"recipe evolve: no new problem was kept (see "
                           f"{out / 'evolve' / 'filter' / 'report.md'}), and keep_seeds is false")
    path = out / "problems.jsonl"
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    return path


def _data(cfg: dict, default: Path) -> tuple[str | Path, dict]:
    """A stage's input, popped from ``cfg``: ``data`` (anything ``distill.data.read`` takes;
    default: the stage before's output) and its ``split``, ``subset``, ``revision`` and
    ``field`` (``{target: column}`` or ``["target=column"]``)."""
    options = {"split": cfg.pop("split", "train"), "subset": cfg.pop("subset", None),
               "revision": cfg.pop("revision", None),
               "fields": parse_fields(cfg.pop("field", None))}
    return cfg.pop("data", default), options


def _filter(recipe: dict, out: Path) -> dict:
    from distill.filters.pipeline import run_filter

    cfg = dict(recipe["filter"] or {})
    data, options = _data(cfg, out / "generate")
    config = cfg.get("config")
    if "stages" in cfg:  # inline stages: written next to the output, for the record
        config = out / "filter.yaml"
        config.write_text(yaml.safe_dump({"stages": cfg["stages"]}, sort_keys=False))
    result = run_filter(data, out / "filter", config=config, data_options=options)
    return {"rows_in": result.rows_in, "kept": result.kept, "dropped": result.dropped}


def _publish(recipe: dict, out: Path) -> dict:
    from distill.publish.publish import publish

    cfg = dict(recipe["publish"] or {})
    data, options = _data(cfg, out / "filter")
    publish(data, out / "publish", **cfg, data_options=options)
    return {"folder": str(out / "publish")}


def _train(recipe: dict, out: Path) -> dict:
    from distill.sft.methods import method

    cfg = dict(recipe["train"] or {})
    data, options = _data(cfg, out / "filter" / "kept")
    name = cfg.pop("method", "sft")
    try:
        _, train = method(name)
    except DistillError as e:
        raise DistillError(f"recipe train: {e}") from None
    if cfg.get("offline_logits") == "generate":  # one pass: the top-k generate stored
        cfg["offline_logits"] = str(out / "generate")
    if name == "kd" and "offline_logits" not in cfg:  # the recipe's teacher, unless named here
        cfg.setdefault("teacher", _teacher_model(recipe))
    elif name in ("gkd", "onpolicy"):
        cfg.setdefault("teacher_model_name_or_path", _teacher_model(recipe))
    student = (recipe.get("student") or {}).get("model")
    result = train(student, data, out / "train", data_options=options, **cfg)
    return {k: result.metrics.get(k) for k in ("train_loss", "global_step", "train_runtime",
                                               "train_tokens")}


def _teacher_model(recipe: dict) -> str:
    from distill.models import resolve_model

    return resolve_model((recipe.get("teacher") or {}).get("model"))


def _eval(recipe: dict, out: Path) -> dict:
    from distill.eval.compare import compare
    from distill.eval.run import evaluate

    cfg = dict(recipe["eval"] or {})
    if "data" in cfg and "task" in cfg:
        raise DistillError("recipe eval: give data or task (the same thing), not both")
    task = cfg.pop("data", None) or cfg.pop("task", "gsm8k")
    if {"offset", "shuffle"} & set(cfg):  # a slice of the task, e.g. held-out items
        cfg["task"] = task
        task = str(_task_file(cfg, out / "eval" / "items.jsonl", default_split=None))
    cfg["fields"] = parse_fields(cfg.pop("field", None))
    baseline = cfg.pop("baseline", True)
    teacher = cfg.pop("teacher", None)  # settings that differ for the teacher, e.g. {shots: 8}
    cfg.setdefault("regenerate", True)  # a student trained again is evaluated again
    student = (recipe.get("student") or {}).get("model")
    runs = {}
    if baseline:
        runs["baseline"] = evaluate(student, task, out / "eval" / "baseline", **cfg)
    runs["student"] = evaluate(str(out / "train"), task, out / "eval" / "student", **cfg)
    if teacher is not None:
        runs["teacher"] = evaluate((recipe.get("teacher") or {}).get("model"), task,
                                   out / "eval" / "teacher", **{**cfg, **teacher})
    result = compare([r.out for r in runs.values()], out / "eval" / "compare")
    versus = result["runs"][list(runs).index("student")]
    return {"runs": {name: {k: r.metrics.get(k) for k in ("accuracy", "accuracy_ci", "items",
                                                          "format_compliance", "mean_tokens",
                                                          "shots")}
                     for name, r in runs.items()},
            "versus_baseline": {k: versus.get(k) for k in (
                "difference", "difference_ci", "retention", "retention_ci")} if baseline else None,
            "plots": result["plots"]}


RUNNERS = {"evolve": _evolve,
           "generate": _generate, "filter": _filter, "publish": _publish, "train": _train,
           "eval": _eval}


def _summary(recipe: dict, out: Path, state: dict) -> dict:
    summary = {"recipe": recipe.get("name"), "out": str(out), "created": io.now(),
               "stages": {s: state[s] for s in STAGES if s in state}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [f"# Run summary: {recipe.get('name') or out.name}", ""]
    reports = {"evolve": "evolve/filter/report.md",
               "generate": "generate/manifest.json", "filter": "filter/report.md",
               "publish": "publish/README.md", "train": "train/README.md",
               "eval": "eval/compare/compare.md"}
    for stage, info in summary["stages"].items():
        numbers = json.dumps(info.get("result"), default=str)
        lines.append(f"- **{stage}** ({info['status']}, {info.get('seconds', '-')} s): "
                     f"[{reports[stage]}]({reports[stage]}) `{numbers[:300]}`")
    ev = (state.get("eval") or {}).get("result")
    if ev:
        lines += ["", "| model | accuracy | 95% CI | items |", "|---|---:|---|---:|"]
        for name, m in ev["runs"].items():
            lo, hi = m["accuracy_ci"]
            lines.append(f"| {name} | {m['accuracy']:.3f} | {lo:.3f}-{hi:.3f} | {m['items']} |")
        if ev.get("versus_baseline"):
            v = ev["versus_baseline"]
            lo, hi = v["difference_ci"]
            lines += ["", (f"Student - baseline: {v['difference']:+.3f} (95% CI {lo:+.3f} to "
                           f"{hi:+.3f}, paired bootstrap).")]
        lines += ["", "![accuracy](eval/compare/accuracy.png)"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _save_state(out: Path, state: dict) -> None:
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    tmp.replace(out / STATE)

