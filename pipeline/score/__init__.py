"""Lead scoring: points per event and attribute, exact decay, lifecycle stages (pure functions)."""

from pipeline.score.decay import decayed
from pipeline.score.profile import Profile, ScoreDelta, absorb, score_attributes, score_event

__all__ = ["Profile", "ScoreDelta", "absorb", "decayed", "score_attributes", "score_event"]
