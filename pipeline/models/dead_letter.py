"""Dead letters: the value of ``ma.dead-letter``, one for every rejected input."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipeline.models.types import UtcDatetime


class DeadLetter(BaseModel):
    """A rejected input: what came in, from where, and why it was refused."""

    received_at: UtcDatetime
    source: str = Field(description="where it was rejected, e.g. 'collector:/v1/batch'")
    error: str = Field(description="a message a person can act on")
    payload: object = Field(description="the input as received (JSON, or text when not JSON)")
