"""Temperature and alpha schedules at their endpoints, midpoints and past the end."""

from __future__ import annotations

import math

import pytest

from distill.errors import DistillError
from distill.sft.kd.schedules import (
    ALPHA_SCHEDULES,
    TEMPERATURE_SCHEDULES,
    check_schedule,
    schedule_value,
)


@pytest.mark.parametrize("kind, mid", [("linear", 2.5), ("cosine", 2.5), ("exponential", 2.0)])
def test_decays_run_from_start_to_end(kind, mid):
    values = [schedule_value(kind, 4.0, 1.0, s, 100) for s in (0, 50, 100, 150)]
    assert values == pytest.approx([4.0, mid, 1.0, 1.0])


def test_cosine_is_flat_at_both_ends_and_exponential_is_geometric():
    early = schedule_value("cosine", 4.0, 1.0, 10, 100)
    assert early == pytest.approx(1.0 + 3.0 * (1 + math.cos(math.pi * 0.1)) / 2)
    assert 4.0 - early < schedule_value("linear", 4.0, 1.0, 0, 100) - \
        schedule_value("linear", 4.0, 1.0, 10, 100)
    steps = [schedule_value("exponential", 8.0, 1.0, s, 3) for s in range(4)]
    assert steps == pytest.approx([8.0, 4.0, 2.0, 1.0])


def test_constant_ignores_the_end_value():
    assert {schedule_value("constant", 2.0, 9.0, s, 10) for s in (0, 5, 20)} == {2.0}


def test_temperature_warmup_ramps_then_holds():
    values = [schedule_value("warmup", 1.0, 4.0, s, 100, warmup_steps=10) for s in (0, 5, 10, 60)]
    assert values == pytest.approx([1.0, 2.5, 4.0, 4.0])


def test_alpha_warmup_decay_rises_from_zero_then_decays_to_end():
    values = [schedule_value("warmup_decay", 0.9, 0.1, s, 110, warmup_steps=10)
              for s in (0, 5, 10, 60, 110, 500)]
    assert values == pytest.approx([0.0, 0.45, 0.9, 0.5, 0.1, 0.1])


def test_zero_length_spans_give_the_final_value():
    assert schedule_value("linear", 0.9, 0.1, 0, 0) == pytest.approx(0.1)
    assert schedule_value("warmup", 1.0, 3.0, 0, 10, warmup_steps=0) == 3.0


def test_unknown_kinds_and_bad_exponential_values_are_named():
    assert set(ALPHA_SCHEDULES) - set(TEMPERATURE_SCHEDULES) == {"warmup_decay"}
    with pytest.raises(DistillError, match="constant, linear, cosine, exponential, warmup"):
        check_schedule("step", TEMPERATURE_SCHEDULES, "kd temperature schedule")
    with pytest.raises(DistillError, match="kd alpha schedule 'warmup'"):
        check_schedule("warmup", ALPHA_SCHEDULES, "kd alpha schedule")
    with pytest.raises(DistillError, match="schedule 'rsqrt'"):
        schedule_value("rsqrt", 1.0, 0.0, 0, 10)
    with pytest.raises(DistillError, match="> 0"):
        schedule_value("exponential", 1.0, 0.0, 5, 10)
