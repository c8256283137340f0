"""Triggers: when a rule fires for a subject (``decide``), what the rules remember (``state``)."""

from pipeline.trigger.decide import (
    Outcome,
    Subject,
    fire_due,
    on_event,
    on_history,
    on_score,
    trigger_id,
)
from pipeline.trigger.state import TriggerState

__all__ = [
    "Outcome",
    "Subject",
    "TriggerState",
    "fire_due",
    "on_event",
    "on_history",
    "on_score",
    "trigger_id",
]
