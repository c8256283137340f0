"""Trigger messages: the value of ``ma.triggers``, the public output."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipeline.models.types import UtcDatetime

Channel = Literal["email", "web", "sales"]


class Trigger(BaseModel):
    """A fired trigger. Deduplicate on ``trigger_id``: delivery is at-least-once.

    ``trigger_id`` is deterministic: the same rule, subject and occurrence give the same id, also
    when the pipeline replays after a crash.
    """

    trigger_id: str
    rule: str
    channel: Channel
    contact_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None
    fired_at: UtcDatetime
    due_at: UtcDatetime
    score: float
    cause_event_ids: list[str] = Field(default_factory=list)
    attributes: dict[str, object] = Field(default_factory=dict)
