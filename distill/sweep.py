"""``distill run RECIPE --sweep KEY=V1,V2`` (or a ``sweep:`` block): an ablation.

Each key (``train.num_train_epochs``, ``generate.n``, ``rounds``, ...) is varied on its own
against the baseline: the recipe with every swept key at its first value. Each variant runs
in ``variants/NAME/``; a stage whose settings (its own and everything upstream) match one a
variant finished before is linked to that folder, not rerun, so training variants share one
generation. Then ``eval compare`` over every variant's student (paired intervals against the
baseline) and ``sweep.md``/``sweep.json``: accuracy, the difference, and the cost (minutes per
stage, generated and trained tokens).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path

import yaml

from distill import io
from distill.errors import DistillError
from distill.log import log
from distill.recipe_check import SECTIONS, check_recipe

COST_STAGES = ("evolve", "generate", "filter", "publish", "train", "eval")


def sweep_variants(recipe: dict, flags: list[str], path: Path | str) -> list[tuple[str, dict]]:
    """``[(name, recipe)]``: the baseline first; empty when nothing is swept."""
    block = recipe.get("sweep") or {}
    if not isinstance(block, dict):
        raise DistillError(f"{path}: sweep: a mapping of KEY: [V1, V2, ...]")
    axes = {str(k): (v if isinstance(v, list) else [v], f"{path}: sweep: {k}")
            for k, v in block.items()}
    for flag in flags:
        key, sep, values = flag.partition("=")
        if not sep or not key.strip() or not values:
            raise DistillError(f"--sweep {flag}: give KEY=V1,V2, e.g. "
                               "--sweep train.num_train_epochs=1,3")
        axes[key.strip()] = ([_value(v) for v in values.split(",")], f"--sweep {key.strip()}")
    for values, where in axes.values():
        if not values:
            raise DistillError(f"{where}: give at least one value")
        if len({_show(v) for v in values}) < len(values):
            raise DistillError(f"{where}: a value repeats ({', '.join(map(_show, values))})")
    if not axes:
        return []
    base = {k: v for k, v in recipe.items() if k != "sweep"}
    for key, (values, where) in axes.items():
        base = _set(base, key, _name(key, values[0])[1], where)
    variants = [("baseline", base, ", ".join(where for _, where in axes.values()))]
    for key, (values, where) in axes.items():
        for v in values[1:]:
            name, v = _name(key, v)
            variants.append((name, _set(base, key, v, where), where))
    names = [folder_name(name) for name, _, _ in variants]
    if len(set(names)) < len(names):
        raise DistillError(f"{path}: sweep: two variants are named "
                           f"{next(n for n in names if names.count(n) > 1)!r}")
    for _, variant, where in variants:
        try:
            check_recipe(variant, Path(str(path)))
        except DistillError as e:
            raise DistillError(f"{where}: {e}") from None
    return [(name, variant) for name, variant, _ in variants]


def folder_name(name: str) -> str:
    """A variant's folder: its name with every run of characters other than letters, digits
    and ``.,=+-`` as one ``-`` (readers such as ``datasets`` and vLLM glob their paths, so
    ``rounds=[{}, {...}]`` would not be found)."""
    return re.sub(r"[^\w.,=+-]+", "-", name).strip("-") or "variant"


def _value(text: str):
    """A value as YAML reads it; ``1e-5`` (a string to YAML 1.1) is a number."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _name(key: str, value) -> tuple[str, object]:
    """The variant's name and value: ``train.num_train_epochs=4``; a section's mapping:
    ``train.method=kd,train.alpha=1``, or its ``variant`` key (``{variant: lora, ...}``)."""
    if "." in key or key == "rounds" or not isinstance(value, dict):
        return f"{key}={_show(value)}", value
    value = dict(value)
    name = value.pop("variant", None)
    return str(name or ",".join(f"{key}.{k}={_show(v)}" for k, v in value.items())), value


def _set(recipe: dict, key: str, value, where: str) -> dict:
    """A copy of the recipe with ``key`` (``section.option[.option]`` or ``rounds``) set; a
    section with a mapping (``train: {method: kd, alpha: 1}``) changes those options of it."""
    section, *rest = key.split(".")
    if section not in (*SECTIONS, "rounds"):
        close = difflib.get_close_matches(section, [*SECTIONS, "rounds"], n=1)
        raise DistillError(f"{where}: unknown section {section!r}; "
                           + (f"did you mean {close[0]!r}? " if close else "")
                           + "give SECTION.KEY, e.g. train.num_train_epochs, or rounds")
    if section == "rounds" and rest:
        raise DistillError(f"{where}: rounds takes no sub-key")
    if section != "rounds" and not rest and not isinstance(value, dict):
        raise DistillError(f"{where}: give {section}.KEY, e.g. train.num_train_epochs, or a "
                           f"mapping of {section} options")
    if section in SECTIONS and section not in recipe:
        raise DistillError(f"{where}: the recipe has no {section} section")
    recipe = copy.deepcopy(recipe)
    if section == "rounds":
        recipe[section] = value
        return recipe
    if not rest:
        recipe[section] = {**(recipe[section] or {}), **value}
        return recipe
    recipe[section] = node = recipe[section] or {}
    for part in rest[:-1]:
        node[part] = node = node.get(part) or {}
        if not isinstance(node, dict):
            raise DistillError(f"{where}: {part} is not a mapping")
    node[rest[-1]] = value
    return recipe


def run_sweep(variants: list[tuple[str, dict]], out: Path, from_stage: str | None,
              until_stage: str | None) -> dict:
    from distill.recipe import STAGES, run_one

    runs, started = [], io.now()
    for name, recipe in variants:
        folder = out / "variants" / folder_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        log(f"[sweep] {name} into {folder}")
        summary = run_one(recipe, folder, [s for s in STAGES if s in recipe], from_stage,
                          until_stage, shared=out / "variants", started=started)
        runs.append((name, folder, summary))
    return _report(out, runs)


def _stages(summary: dict) -> list[tuple[str, dict]]:
    """Every stage record of a run, over its rounds when it has rounds."""
    return [(stage, info) for s in summary.get("rounds", [summary])
            for stage, info in s["stages"].items()]


def _student(folder: Path, summary: dict) -> Path | None:
    rounds = summary.get("rounds")
    last = folder / f"round-{len(rounds)}" if rounds else folder
    return last / "eval" / "student" if (last / "eval" / "student" / "metrics.json").exists() \
        else None


def _report(out: Path, runs: list[tuple[str, Path, dict]]) -> dict:
    from distill.eval.compare import compare

    evaluated = [(name, _student(folder, s)) for name, folder, s in runs]
    evaluated = [(name, d) for name, d in evaluated if d is not None]
    result = compare([d for _, d in evaluated], out / "compare",
                     labels=[n for n, _ in evaluated]) if evaluated else {"runs": []}
    accuracy = {r["run"]: r for r in result["runs"]}
    rows = []
    for name, folder, summary in runs:
        seconds: dict[str, float] = {}
        shared, generated, trained = set(), 0, 0
        for stage, info in _stages(summary):
            seconds[stage] = seconds.get(stage, 0.0) + (info.get("seconds") or 0.0)
            if "shared" in info:
                shared.add(stage)
            numbers = info.get("result") or {}
            if stage == "generate":
                generated += numbers.get("tokens") or 0
            if stage == "train":
                trained += numbers.get("train_tokens") or 0
        a = accuracy.get(name, {})
        rows.append({"variant": name, "folder": str(folder), "accuracy": a.get("accuracy"),
                     "accuracy_ci": a.get("accuracy_ci"), "difference": a.get("difference"),
                     "difference_ci": a.get("difference_ci"), "seconds": seconds,
                     "hours": round(sum(seconds.values()) / 3600, 3),
                     "generated_tokens": generated, "trained_tokens": trained,
                     "shared": sorted(shared, key=COST_STAGES.index)})
    summary = {"out": str(out), "created": io.now(), "baseline": runs[0][0], "variants": rows,
               "compare": str(out / "compare"), "report": "sweep.md"}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "sweep.md").write_text(_markdown(rows))
    log(f"sweep: {out / 'sweep.md'}")
    return summary


def _markdown(rows: list[dict]) -> str:
    stages = [s for s in COST_STAGES if any(s in r["seconds"] for r in rows)]
    lines = ["# Sweep", "",
             "| variant | accuracy [95% CI] | vs baseline [95% CI] | "
             + " | ".join(f"{s} min" for s in stages)
             + " | total h | generated tokens | trained tokens | shared with another variant |",
             "|---|---|---|" + "---:|" * (len(stages) + 3) + "---|"]
    for r in rows:
        acc = "-" if r["accuracy"] is None else \
            f"{r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}]"
        diff = "-" if r["difference"] is None else \
            (f"{r['difference']:+.3f} [{r['difference_ci'][0]:+.3f}, "
             f"{r['difference_ci'][1]:+.3f}]")
        lines.append(f"| {r['variant']} | {acc} | {diff} | "
                     + " | ".join(f"{r['seconds'].get(s, 0.0) / 60:.1f}" for s in stages)
                     + f" | {r['hours']:.2f} | {r['generated_tokens']} | {r['trained_tokens']} "
                     f"| {', '.join(r['shared']) or '-'} |")
    lines += ["", ("Each key varies alone against the baseline (every swept key at its first "
              "value). Accuracy: the final student on the eval items, Wilson 95%; vs baseline: "
              "paired bootstrap over the same items ([compare/compare.md](compare/compare.md)). "
              "Minutes per stage count a shared stage's time in every variant that uses it."),
              "", "![accuracy by variant](compare/accuracy.png)", ""]
    return "\n".join(lines)
