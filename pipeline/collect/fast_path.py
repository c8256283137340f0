"""The common shape of an inbound event, checked by hand: the collector's hot path.

``InboundEvent.model_validate`` costs several microseconds an event (Python validators for the
time and the maps, UUID objects made and turned back into text). Nearly every event a site
sends has the plain shape the JS tag makes: canonical UUID texts, short strings, epoch
milliseconds, small maps. ``inbound_fields`` checks exactly that shape by hand and returns what
the model would hold; for anything else (a wrong type, text over a limit, a time as text that
does not parse, whitespace to strip) it returns ``None`` and the caller asks the model, so every
rejection message still comes from pydantic. ``tests/unit/collect/test_fast_path.py`` pins the
two equal.

Example::

    inbound_fields({"type": "page_view", "anonymous_id": aid, "url": "https://a.io/"})
    # {"type": "page_view", "anonymous_id": aid, "url": "https://a.io/", "ts": None, ...}
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from pipeline.clock import from_millis
from pipeline.models.events import EventType
from pipeline.models.types import (
    MAX_EMAIL_TEXT,
    MAX_EPOCH_MILLIS,
    MAX_IDENTIFIER_LENGTH,
    MAX_KEY_LENGTH,
    MAX_MAP_KEYS,
    MAX_SHORT_TEXT,
    MAX_URL_LENGTH,
    MAX_VALUE_LENGTH,
    UtcDatetime,
    check_map,
)

EVENT_TYPES = frozenset(get_args(EventType))
BOUNCE_TYPES = frozenset({"hard", "soft"})
#: ``InboundEvent``'s text fields and their length limits.
TEXT_LIMITS = {
    "anonymous_id": MAX_IDENTIFIER_LENGTH,
    "user_id": MAX_IDENTIFIER_LENGTH,
    "url": MAX_URL_LENGTH,
    "referrer": MAX_URL_LENGTH,
    "title": MAX_VALUE_LENGTH,
    "name": MAX_SHORT_TEXT,
    "email": MAX_EMAIL_TEXT,
    "form_id": MAX_SHORT_TEXT,
    "campaign_id": MAX_SHORT_TEXT,
}
#: ``InboundEvent``'s UUID fields: kept as their canonical text (what ``str(UUID)`` gives).
UUID_FIELDS = frozenset({"event_id", "contact_id"})
MAP_FIELDS = frozenset({"properties", "traits"})
#: Every field ``inbound_fields`` returns, as ``InboundEvent`` has them.
FIELDS = frozenset({"type", "ts", "bounce_type", *TEXT_LIMITS, *UUID_FIELDS, *MAP_FIELDS})
_NONE = dict.fromkeys(FIELDS)

# The text ``str(uuid.UUID(...))`` gives: any other spelling goes to the model, which accepts
# more (upper case, no hyphens, braces, ``urn:uuid:``) and answers with the canonical text.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# pydantic refuses text with lone surrogates (not valid Unicode); JSON bodies never hold them.
_SURROGATE = re.compile("[\ud800-\udfff]")
# ISO-8601 times are parsed by pydantic itself (its parser, not Python's, decides what is valid);
# longer texts are no time, and left to the model.
_TIME = TypeAdapter(UtcDatetime)
MAX_TIME_TEXT = 64
#: ISO-8601 in UTC as JavaScript's ``toISOString`` and the SDKs write it, which
#: ``datetime.fromisoformat`` reads as the model does (pinned by test_fast_path).
_PLAIN_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z")


def inbound_fields(raw: dict[str, Any]) -> dict[str, Any] | None:
    """``InboundEvent.model_validate(raw)``'s fields as a dict (UUIDs as text), or ``None`` when
    ``raw`` is not of the plain shape: the model must then decide (and explain)."""
    fields = _NONE.copy()
    # One pass over the keys sent (a handful), each checked inline: this runs for every event.
    for name, value in raw.items():
        if value is None:
            if name in MAP_FIELDS:
                return None  # the model says "Input should be a valid dictionary"
            continue
        limit = TEXT_LIMITS.get(name)
        if limit is not None:
            if not plain_text(value, limit):
                return None
            fields[name] = value
        elif name in UUID_FIELDS:
            if type(value) is not str or _CANONICAL_UUID.fullmatch(value) is None:
                return None
            fields[name] = value
        elif name == "type":
            if type(value) is not str or value not in EVENT_TYPES:
                return None
            fields[name] = value
        elif name == "ts":
            fields[name] = ts = utc_time(value)
            if ts is None:
                return None
        elif name in MAP_FIELDS:
            if type(value) is not dict or not is_plain_map(value):
                return None
            fields[name] = dict(value)
        elif name == "bounce_type":
            if type(value) is not str or value not in BOUNCE_TYPES:
                return None
            fields[name] = value
        # any other key is ignored, as the model ignores it
    if fields["type"] is None:
        return None
    # The model strips identifiers' whitespace first (and then applies the length limit): leave
    # that to it.
    for name in ("anonymous_id", "user_id"):
        identifier = fields[name]
        if identifier and (identifier[0].isspace() or identifier[-1].isspace()):
            return None
    for name in MAP_FIELDS:
        if fields[name] is None:
            fields[name] = {}
    return fields


def plain_text(value: object, limit: int) -> bool:
    """A text field the model keeps as it is: text within ``limit``, valid Unicode."""
    return (
        type(value) is str
        and len(value) <= limit
        and (value.isascii() or _SURROGATE.search(value) is None)
    )


def utc_time(value: object) -> datetime | None:
    """``UtcDatetime`` of epoch milliseconds or ISO text; ``None`` if the model would refuse."""
    if type(value) is int or type(value) is float:  # not bool: the model refuses booleans
        if not 0 <= value < MAX_EPOCH_MILLIS:
            return None
        return from_millis(value)
    if type(value) is str and len(value) <= MAX_TIME_TEXT:
        if _PLAIN_UTC_TIME.fullmatch(value):  # what SDKs send (toISOString): 3x cheaper
            try:
                at = datetime.fromisoformat(value)
                return at if at.tzinfo is UTC else at.astimezone(UTC)
            except ValueError:
                pass  # e.g. month 13: the model says what is wrong
        try:
            return _TIME.validate_python(value)
        except ValidationError:
            return None
    return None


def is_plain_map(value: dict[Any, Any]) -> bool:
    """Properties or traits the model accepts as they are: ``check_map``'s bounds, and keys
    without surrogates (the model validates keys as text). Flat maps of short texts and numbers
    are checked inline; nested ones by ``check_map`` itself."""
    if len(value) > MAX_MAP_KEYS:
        return False
    for key, item in value.items():
        if (
            type(key) is not str
            or len(key) > MAX_KEY_LENGTH
            or not (key.isascii() or _SURROGATE.search(key) is None)
        ):
            return False
        kind = type(item)
        if kind is str:
            if len(item) > MAX_VALUE_LENGTH:
                return False
        elif kind is dict or kind is list:
            try:
                check_map(value, depth=1)
            except ValueError:
                return False
            return all(key.isascii() or _SURROGATE.search(key) is None for key in value)
    return True
