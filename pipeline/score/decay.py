"""Exact exponential decay: a score is stored as (value, as-of) and decayed on read and update."""

from __future__ import annotations

from datetime import timedelta


def decayed(value: float, from_ms: int, to_ms: int, half_life: timedelta | None) -> float:
    """``value`` at ``from_ms`` seen at ``to_ms``: halved every ``half_life`` (none: unchanged).

    Example::

        >>> decayed(100.0, 0, 30 * 86_400_000, timedelta(days=30))
        50.0
    """
    if half_life is None or value == 0 or to_ms == from_ms:
        return value
    half_life_ms = half_life.total_seconds() * 1000
    if half_life_ms <= 0:
        return value
    return float(value * 0.5 ** ((to_ms - from_ms) / half_life_ms))
