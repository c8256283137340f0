"""Triggers: when a rule fires, after which delay, unless what (pure functions)."""

from pipeline.trigger.decide import Outcome, Subject, fire_due, on_event, on_score, trigger_id

__all__ = ["Outcome", "Subject", "fire_due", "on_event", "on_score", "trigger_id"]
