"""Dead letters: the value of ``ma.dead-letter``, one for every rejected input."""

from __future__ import annotations

import reprlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from pipeline import codec
from pipeline.models.types import UtcDatetime

#: A dead letter keeps at most this much of its payload (its JSON, in bytes).
MAX_DEAD_LETTER_PAYLOAD = 64 * 1024
#: Text of a payload JSON cannot hold: its first levels only, so no depth is a RecursionError.
_HEAD = reprlib.Repr()
_HEAD.maxlevel, _HEAD.maxlist, _HEAD.maxdict, _HEAD.maxstring = 24, 100, 100, 2048


class DeadLetter(BaseModel):
    """A rejected input: what came in, from where, and why it was refused."""

    received_at: UtcDatetime
    source: str = Field(description="where it was rejected, e.g. 'collector:/v1/batch'")
    error: str = Field(description="a message a person can act on")
    payload: object = Field(description="the input as received (JSON, or text when not JSON)")


def bounded_payload(payload: Any) -> Any:
    """``payload`` as it is, or its head when its JSON is over ``MAX_DEAD_LETTER_PAYLOAD``;
    a payload JSON cannot hold (nested deeper than orjson's 255 levels, say) as bounded text."""
    try:
        encoded = codec.dumps(payload)
    except TypeError as exc:
        return {"unencodable": str(exc), "head": _HEAD.repr(payload)[:MAX_DEAD_LETTER_PAYLOAD]}
    if len(encoded) <= MAX_DEAD_LETTER_PAYLOAD:
        return payload
    return {
        "truncated": True,
        "size": len(encoded),
        "head": encoded[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", errors="replace"),
    }


def dead_letter_value(
    received_at: datetime, source: str, error: str, payload: Any
) -> dict[str, Any]:
    """A ``DeadLetter`` value, its payload bounded (``bounded_payload``)."""
    return {
        "received_at": received_at,
        "source": source,
        "error": error,
        "payload": bounded_payload(payload),
    }
