"""Score changes: the value of ``ma.scores``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipeline.models.types import UtcDatetime

LifecycleStage = Literal["lead", "mql", "sql"]


class ScoreChange(BaseModel):
    """A change of a contact's score, with the rule and event that caused it.

    ``score`` is the value after the change, decayed to ``at``. Anonymous profiles' changes carry
    ``anonymous_id`` and no ``contact_id``.
    """

    contact_id: str | None
    anonymous_id: str | None = None
    score: float
    delta: float
    rule: str = Field(description="scoring rule id, or 'anonymous_history' when a cookie links")
    event_id: str | None
    lifecycle_stage: LifecycleStage
    at: UtcDatetime
