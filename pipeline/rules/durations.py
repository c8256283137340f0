"""Durations in the rules file: ``45s``, ``15m``, ``2h``, ``1d``, ``1w``, or combined: ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``1d12h`` into a timedelta; raise ``ValueError`` with what is accepted."""
    compact = text.replace(" ", "").lower()
    if not compact or _PART.sub("", compact):
        raise ValueError(
            f"invalid duration {text!r}: expected a number and a unit, e.g. 30s, 15m, 2h, 1d, 1w"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text ``parse_duration`` reads back as ``value``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _coerce(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 1d, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration such as 1d, got {type(value).__name__}")


#: A pydantic field type: reads ``"1d"`` (or seconds), writes ``"1d"``.
Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
