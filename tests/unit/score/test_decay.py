"""Exact exponential decay: a score halves every half-life."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.score import decayed
from tests.unit.factories import DAY, T0

MONTH = timedelta(days=30)


@pytest.mark.parametrize(
    ("days", "expected"),
    [(0, 100.0), (30, 50.0), (60, 25.0), (90, 12.5), (15, 100 / math.sqrt(2))],
)
def test_decay_is_exact_after_n_half_lives(days: int, expected: float) -> None:
    assert decayed(100.0, T0, T0 + days * DAY, MONTH) == pytest.approx(expected, rel=1e-12)


def test_docstring_example_holds() -> None:
    assert decayed(100.0, 0, 30 * 86_400_000, MONTH) == 50.0


def test_no_half_life_means_no_decay() -> None:
    assert decayed(42.0, T0, T0 + 365 * DAY, None) == 42.0


def test_zero_half_life_means_no_decay() -> None:
    assert decayed(42.0, T0, T0 + DAY, timedelta(0)) == 42.0


def test_zero_stays_zero() -> None:
    assert decayed(0.0, T0, T0 + 10 * DAY, MONTH) == 0.0


def test_negative_scores_decay_towards_zero_too() -> None:
    assert decayed(-20.0, T0, T0 + 30 * DAY, MONTH) == pytest.approx(-10.0)


def test_looking_back_in_time_undoes_decay() -> None:
    assert decayed(50.0, T0 + 30 * DAY, T0, MONTH) == pytest.approx(100.0)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=0, max_value=400 * DAY),
    st.integers(min_value=0, max_value=400 * DAY),
)
def test_decaying_in_two_steps_equals_decaying_in_one(value: float, a: int, b: int) -> None:
    once = decayed(value, T0, T0 + a + b, MONTH)
    twice = decayed(decayed(value, T0, T0 + a, MONTH), T0 + a, T0 + a + b, MONTH)
    assert twice == pytest.approx(once, rel=1e-9, abs=1e-9)
