"""Identity stitching: which contact an anonymous cookie belongs to (CONTRACT §3)."""

from pipeline.stitch.decide import Cookie, Decision, decide, evidence_for

__all__ = ["Cookie", "Decision", "decide", "evidence_for"]
