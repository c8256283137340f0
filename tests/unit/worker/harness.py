"""The in-memory pipeline the unit tests drive: ``pipeline.testing`` (also for users' rules)."""

from pipeline.testing import Pipeline, roundtrip

__all__ = ["Pipeline", "roundtrip"]
