"""A recipe's sections checked before any stage runs: every key is one its stage takes (a
typo names the closest valid key), and the numbers generate and eval take are in range, with
the same checks the commands make (``Sampling``, ``check_number``)."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import fields
from pathlib import Path

from distill.errors import DistillError

# Keys that slice a task into the stage's problems or items (``recipe._task_file``).
TASK_KEYS = ("task", "split", "shuffle", "shuffle_seed", "offset", "limit")
# Keys the run sets itself, and where they belong instead.
SET_BY_RUN = {"model": "teacher: {model: ...} or student: {model: ...}",
              "backend": "teacher: {backend: ...}", "base_url": "teacher: {base_url: ...}",
              "out": "the run folder (--out)", "in_dir": "the run folder (--out)",
              "output_dir": "the run folder (--out)", "student": "student: {model: ...}"}
# Keys that name a stage's input (``recipe._data``): any data ``distill.data.read`` takes.
DATA_KEYS = {"data", "split", "subset", "revision", "field"}
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "n", "seed", "logprobs", "stop")
# Keys of the generate section that pick its problems: evolve's seeds (``recipe._evolve``).
SEED_KEYS = ("source", *TASK_KEYS, "subset", "revision", "fields")
# The evolve section's own keys (besides generate's options), with their defaults.
EVOLVE_DEFAULTS = {"prompt": "gsm8k-evol", "filter": "problem", "keep_seeds": True}


SECTIONS = ("teacher", "student", "evolve", "generate", "filter", "publish", "train", "eval")
# Keys of a round's mapping besides section overrides (``distill.rounds``).
ROUND_KEYS = {"problems": ("unsolved", "all"), "continue": (False, True)}


def check_recipe(recipe: dict, path: Path) -> None:
    """Stop with one line naming the recipe file, section and key at fault."""
    if recipe.get("rounds") is not None and "evolve" in recipe:
        raise DistillError(f"{path}: evolve: not with rounds (round 2 on samples the generate "
                           "section's problems again, not the new ones); run the recipe "
                           "without rounds, then rounds with generate: {source: "
                           "RUN/problems.jsonl}")
    if recipe.get("rounds") is not None:
        for k, spec in enumerate(round_specs(recipe, path), 1):
            check_recipe(with_overrides(recipe, spec), Path(f"{path}: rounds[{k}]")
                         if spec else path)
    for section in SECTIONS:
        if section not in recipe:
            continue
        cfg = recipe[section]
        if cfg is not None and not isinstance(cfg, dict):
            raise DistillError(f"{path}: {section}: a mapping of options, not {cfg!r}")
        where = f"{path}: {section}"
        cfg = cfg or {}
        if section == "evolve":
            _evolve(where, cfg, recipe)
        if section == "train":
            _keys(where, cfg, _train_keys(cfg.get("method", "sft"), where),
                  hint="see distill train METHOD --help")
        else:
            _keys(where, cfg, ALLOWED[section]())
        if section == "eval" and cfg.get("teacher") is not None:
            if not isinstance(cfg["teacher"], dict):
                raise DistillError(f"{where}: teacher: a mapping of eval options, e.g. "
                                   "{shots: 8}")
            _keys(f"{where}: teacher", cfg["teacher"], _params(EVALUATE, *EVAL_SETS))
            _numbers(f"{where}: teacher", cfg["teacher"])
        if section == "generate" and "task" not in cfg:
            for key in set(cfg) & {"offset", "shuffle_seed"}:
                raise DistillError(f"{where}: {key!r} slices a task: give task: NAME, or "
                                   "drop it")
        if section in ("evolve", "generate", "eval"):
            _numbers(where, cfg)


def _evolve(where: str, cfg: dict, recipe: dict) -> None:
    """What the evolve section needs besides its keys: a generate section (its problems are
    the seeds), a problem prompt, and the seeds picked in generate only."""
    from distill.datagen.prompts import load_prompt

    if "generate" not in recipe:
        raise DistillError(f"{where}: needs a generate section: its problems are the seeds, "
                           "and it samples the new problems")
    for key in sorted(set(cfg) & set(SEED_KEYS)):
        raise DistillError(f"{where}: {key!r} picks the seed problems: set it in generate: "
                           "(evolve writes new problems from the generate section's problems)")
    cfg = {**EVOLVE_DEFAULTS, **cfg}
    if not isinstance(cfg["keep_seeds"], bool):
        raise DistillError(f"{where}: keep_seeds: true or false, not {cfg['keep_seeds']!r}")
    if not isinstance(cfg["filter"], str):
        raise DistillError(f"{where}: filter: a filter preset or YAML file, not "
                           f"{cfg['filter']!r}")
    try:
        pf = load_prompt(cfg["prompt"])
    except DistillError as e:
        raise DistillError(f"{where}: {e}") from None
    if pf.kind != "problem":
        raise DistillError(f"{where}: prompt {pf.name!r} is a {pf.kind} prompt; evolve takes a "
                           "problem prompt (kind: problem), e.g. gsm8k-evol or self-instruct")


def round_specs(recipe: dict, path: Path | str = "recipe") -> list[dict]:
    """The rounds of a recipe (``rounds: N`` or a list of mappings), one mapping each."""
    rounds, where = recipe.get("rounds"), f"{path}: rounds"
    missing = [s for s in ("generate", "filter", "train") if s not in recipe]
    if missing:
        raise DistillError(f"{where}: rounds need the {', '.join(missing)} section(s)")
    if isinstance(rounds, int) and not isinstance(rounds, bool):
        if rounds < 1:
            raise DistillError(f"{where}: must be >= 1, got {rounds}")
        return [{} for _ in range(rounds)]
    if not isinstance(rounds, list) or not rounds or \
            not all(isinstance(r, dict) or r is None for r in rounds):
        raise DistillError(f"{where}: a number of rounds, or a list of one mapping per round "
                           "(e.g. [{}, {generate: {shots: 0}}])")
    specs = [dict(r or {}) for r in rounds]
    for k, spec in enumerate(specs, 1):
        _keys(f"{where}[{k}]", spec, {*SECTIONS, *ROUND_KEYS})
        for key, values in ROUND_KEYS.items():
            if key in spec and (k == 1 or spec[key] not in values):
                raise DistillError(f"{where}[{k}]: {key}: " + (
                    "applies from round 2 on" if k == 1 else
                    f"one of {', '.join(str(v).lower() for v in values)}, not {spec[key]!r}"))
        for section in set(spec) & set(SECTIONS):
            if not isinstance(spec[section], dict):
                raise DistillError(f"{where}[{k}]: {section}: a mapping of options to change")
    return specs


def with_overrides(recipe: dict, overrides: dict) -> dict:
    """The recipe with each section of ``overrides`` merged into its own (rounds and sweep
    left out)."""
    merged = {k: v for k, v in recipe.items() if k not in ("rounds", "sweep")}
    for section in set(overrides) & set(SECTIONS):
        merged[section] = {**(recipe.get(section) or {}), **overrides[section]}
    return merged


def _keys(where: str, cfg: dict, allowed: set[str], hint: str = "") -> None:
    for key in cfg:
        if key in allowed:
            continue
        if key in SET_BY_RUN:
            raise DistillError(f"{where}: {key!r} is not set here; it comes from "
                               f"{SET_BY_RUN[key]}")
        close = difflib.get_close_matches(str(key), allowed, n=1)
        known = (f"did you mean {close[0]!r}?" if close else hint or
                 f"it takes: {', '.join(sorted(allowed))}")
        raise DistillError(f"{where}: unknown key {key!r}; {known}")


def _numbers(where: str, cfg: dict) -> None:
    """The numbers a generate or eval section takes, checked as the command checks them."""
    from distill.datagen.backends import Sampling, check_number

    try:
        Sampling(**{k: cfg[k] for k in SAMPLING_KEYS if cfg.get(k) is not None})
        for key in ("limit", "batch_size", "shots", "offset", "shuffle_seed", "ray_workers"):
            minimum = None if key == "shuffle_seed" else 0 if key in ("offset", "shots") else 1
            check_number(key, cfg.get(key), minimum, flag=key not in ("offset", "shuffle_seed"))
    except DistillError as e:
        raise DistillError(f"{where}: {e}") from None


def _params(target: str, *run_sets: str) -> set[str]:
    """The parameters of ``module:function``, less ``run_sets``: those the run sets."""
    from importlib import import_module

    module, name = target.split(":")
    fn = getattr(import_module(module), name)
    return set(inspect.signature(fn).parameters) - set(run_sets)


def _train_keys(method: str, where: str) -> set[str]:
    from distill.sft.methods import method as load_method
    from distill.sft.train import TrainInputs

    try:
        config_class, _ = load_method(method)
    except DistillError as e:
        raise DistillError(f"{where}: {e}") from None
    names = {f.name for f in fields(config_class)} | {"method", "eval_data"}
    names |= set(config_class.renamed_fields) | set(TrainInputs.renamed_fields)
    return (names - set(SET_BY_RUN) - {"config", "data_options"}) | DATA_KEYS


EVALUATE = "distill.eval.run:evaluate"
EVAL_SETS = ("model", "task", "out")
ALLOWED = {
    "teacher": lambda: {"model", "backend", "base_url"},
    "student": lambda: {"model"},
    "generate": lambda: _params("distill.datagen.generate:generate", "model", "backend",
                                "base_url", "out") | set(TASK_KEYS),
    "evolve": lambda: (_params("distill.datagen.generate:generate", "model", "backend",
                                "base_url", "out", "tasks") - set(SEED_KEYS))
    | set(EVOLVE_DEFAULTS),
    "filter": lambda: {"config", "stages"} | DATA_KEYS,
    "publish": lambda: _params("distill.publish.publish:publish", "in_dir", "out",
                               "data_options") | DATA_KEYS,
    "eval": lambda: (_params(EVALUATE, *EVAL_SETS) - {"fields"}) | set(TASK_KEYS) | DATA_KEYS
    | {"baseline", "teacher"},
}
