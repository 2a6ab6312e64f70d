"""The training methods of ``distill train`` and of a recipe's train stage: each name maps to
its config class and its train function, imported when asked (trl is slow to import)."""

from __future__ import annotations

from importlib import import_module

from distill.errors import DistillError
from distill.log import log

METHODS = {
    "sft": ("distill.sft.config:DistillSFTConfig", "distill.sft.train:train_sft"),
    "kd": ("distill.sft.kd.config:DistillKDConfig", "distill.sft.kd.train:train_kd"),
    "onpolicy": ("distill.sft.onpolicy.train:DistillOnPolicyConfig",
                 "distill.sft.onpolicy.train:train_onpolicy"),
}
# Old names that still run their method, with a one-line notice: old -> new.
ALIASES = {"gkd": "onpolicy"}


def method(name: str):
    """(config class, train function) of the method ``name``."""
    if name in ALIASES:
        log(f"distill: train {name} is now train {ALIASES[name]} (TRL's DistillationTrainer); "
            f"running {ALIASES[name]}")
        name = ALIASES[name]
    if name not in METHODS:
        raise DistillError(f"method {name!r} is not one of {', '.join(METHODS)}")
    return tuple(_load(path) for path in METHODS[name])


def _load(path: str):
    module, attr = path.split(":")
    return getattr(import_module(module), attr)
