"""Field types shared by the message models: bounded strings and maps, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from pipeline.clock import from_millis

MAX_MAP_KEYS = 100
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 2048
MAX_URL_LENGTH = 4096
MAX_NESTING = 4
MAX_SHORT_TEXT = 200
MAX_IDENTIFIER_LENGTH = 128
MAX_EMAIL_TEXT = 320
#: Epoch milliseconds from this on (the year 3000) are refused.
MAX_EPOCH_MILLIS = 32503680000000


def _to_utc(value: Any) -> Any:
    """Accept ISO-8601 text or epoch milliseconds; naive times are read as UTC."""
    if isinstance(value, bool):
        raise ValueError("expected an ISO-8601 time or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < MAX_EPOCH_MILLIS:
            raise ValueError("epoch milliseconds out of range")
        return from_millis(value)
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past the year 9999 in UTC
        raise ValueError("time out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, BeforeValidator(_to_utc), AfterValidator(_aware)]
ShortText = Annotated[str, StringConstraints(max_length=MAX_SHORT_TEXT)]
Text = Annotated[str, StringConstraints(max_length=MAX_VALUE_LENGTH)]
UrlText = Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH)]
Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_IDENTIFIER_LENGTH)
]
EmailText = Annotated[str, StringConstraints(max_length=MAX_EMAIL_TEXT)]


def _bounded_map(value: Any) -> Any:
    """Properties and traits: at most 100 keys, short keys, bounded strings and nesting."""
    if not isinstance(value, dict):
        return value  # the dict type check reports it
    check_map(value, depth=1)
    return value


def check_map(value: dict[Any, Any], depth: int) -> None:
    """Raise ``ValueError`` (the message the model reports) unless ``value`` fits the bounds."""
    if len(value) > MAX_MAP_KEYS:
        raise ValueError(f"at most {MAX_MAP_KEYS} keys are accepted, got {len(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"keys must be text of at most {MAX_KEY_LENGTH} characters")
        _check_value(item, depth, key)


def _check_value(item: Any, depth: int, key: str) -> None:
    if isinstance(item, str):
        if len(item) > MAX_VALUE_LENGTH:
            raise ValueError(f"{key}: text longer than {MAX_VALUE_LENGTH} characters")
    elif isinstance(item, dict | list):
        if depth >= MAX_NESTING:
            raise ValueError(f"{key}: nested deeper than {MAX_NESTING} levels")
        if isinstance(item, dict):
            check_map(item, depth + 1)
        else:
            if len(item) > MAX_MAP_KEYS:
                raise ValueError(f"{key}: lists hold at most {MAX_MAP_KEYS} items")
            for element in item:
                _check_value(element, depth + 1, key)


Properties = Annotated[dict[str, Any], BeforeValidator(_bounded_map), Field(default_factory=dict)]
