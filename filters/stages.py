"""The filter stages by name, as configs name them, and building them from a config's list."""

from __future__ import annotations

import importlib

from distill.errors import DistillError
from distill.filters.base import Stage

STAGES = {
    "parse": "distill.filters.parse:Parse",
    "verify": "distill.filters.verify:Verify",
    "execute": "distill.filters.execute:Execute",
    "vote": "distill.filters.vote:Vote",
    "pass_rate": "distill.filters.vote:PassRate",
    "agreement": "distill.filters.vote:Agreement",
    "dedupe": "distill.filters.dedupe:Dedupe",
    "quality": "distill.filters.quality:Quality",
    "decontaminate": "distill.filters.decontaminate:Decontaminate",
    "score": "distill.filters.score:Score",
    "steps": "distill.filters.steps:Steps",
    "valid_output": "distill.filters.output:ValidOutput",
    "new_problem": "distill.filters.problem:NewProblem",
    "consensus": "distill.filters.consensus:Consensus",
}


def stage_class(name: str) -> type[Stage]:
    if name not in STAGES:
        raise DistillError(f"unknown filter stage {name!r}; stages: {', '.join(STAGES)}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_stages(spec: list, where: str = "stages") -> list[Stage]:
    """Stages from a list of names or one-key mappings ``{name: {option: value}}``."""
    stages = []
    for i, entry in enumerate(spec):
        name, options = (entry, {}) if isinstance(entry, str) else _entry(entry, f"{where}[{i}]")
        cls = stage_class(name)
        try:
            stage = cls(**(options or {}))
            stage.options = dict(options or {})
            stages.append(stage)
        except (TypeError, DistillError) as e:  # a wrong option, or a value the stage refuses
            raise DistillError(f"{where}[{i}] ({name}): {e}".replace("__init__() ", "")) from None
    return stages


def _entry(entry, where: str) -> tuple[str, dict]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise DistillError(f"{where}: a stage is a name or a one-key mapping {{name: options}}")
    name, options = next(iter(entry.items()))
    if options is not None and not isinstance(options, dict):
        raise DistillError(f"{where} ({name}): options must be a mapping")
    return name, options or {}
