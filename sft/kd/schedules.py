"""Temperature and alpha schedules for logit distillation: a value per optimizer step.

``schedule_value(kind, start, end, step, total_steps, warmup_steps)``; ``start`` is the value
at step 0 and ``end`` the final one, except where noted. Progress is clamped, so steps past
``total_steps`` keep the final value.

=============  ================================================================================
constant       ``start`` at every step
linear         straight line from ``start`` (step 0) to ``end`` (``total_steps``)
cosine         half cosine from ``start`` to ``end``: ``end + (start - end) * (1 + cos(pi x)) / 2``
exponential    geometric from ``start`` to ``end``: ``start * (end / start) ** x`` (both > 0)
warmup         straight line from ``start`` (step 0) to ``end`` (``warmup_steps``), then ``end``
               (temperature: e.g. 1 -> 4, plain softmax first)
warmup_decay   straight line from 0 (step 0) up to ``start`` (``warmup_steps``), then down to
               ``end`` (``total_steps``) (alpha: pure hard-label CE first, KD ramped in, then
               handed back to the labels)
=============  ================================================================================

``x = step / total_steps``. ``warmup_steps`` is read by ``warmup`` and ``warmup_decay`` only.
Temperatures take ``TEMPERATURE_SCHEDULES``, alpha ``ALPHA_SCHEDULES``; check a configured kind
with ``check_schedule``.
"""

from __future__ import annotations

import math

from distill.errors import DistillError

TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine", "exponential", "warmup")
ALPHA_SCHEDULES = ("constant", "linear", "cosine", "warmup_decay")
SCHEDULES = tuple(dict.fromkeys(TEMPERATURE_SCHEDULES + ALPHA_SCHEDULES))


def check_schedule(kind: str, allowed: tuple[str, ...], name: str) -> None:
    """DistillError naming ``name`` (e.g. 'temperature schedule') unless ``kind`` is allowed."""
    if kind not in allowed:
        raise DistillError(f"{name} {kind!r} is not one of {', '.join(allowed)}")


def schedule_value(kind: str, start: float, end: float, step: int, total_steps: int,
                   warmup_steps: int = 0) -> float:
    """The scheduled value at ``step`` (see the module docstring)."""
    check_schedule(kind, SCHEDULES, "schedule")
    if kind == "constant":
        return start
    if kind == "warmup":
        return _line(start, end, step, warmup_steps)
    if kind == "warmup_decay":
        if step < warmup_steps:
            return _line(0.0, start, step, warmup_steps)
        return _line(start, end, step - warmup_steps, total_steps - warmup_steps)
    x = _progress(step, total_steps)
    if kind == "linear":
        return start + (end - start) * x
    if kind == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * x)) / 2
    if not (start > 0 and end > 0):
        raise DistillError(f"exponential schedule needs start and end > 0, got {start}, {end}")
    return start * (end / start) ** x


def _progress(step: int, span: int) -> float:
    return 1.0 if span <= 0 else min(max(step / span, 0.0), 1.0)


def _line(a: float, b: float, step: int, span: int) -> float:
    return a + (b - a) * _progress(step, span)
