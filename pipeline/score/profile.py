"""A profile: what the pipeline knows of one subject's behaviour (an anonymous cookie or a
contact): score and lifecycle stage, per-rule caps, trigger counters and pending triggers.

Scoring is a pure function of the profile, the event and the rules:

    >>> profile = Profile()
    >>> deltas = score_event(profile, {"event_id": "e1", "type": "page_view", "path": "/pricing"},
    ...                      rules.scoring, at_ms=0)   # doctest: +SKIP
    >>> profile.score, deltas[0].rule                  # doctest: +SKIP
    (10.0, 'pricing-view')

Event time (``received_at``) is the clock of scoring, so a replay gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.rules.models import AttributeRule, Lifecycle, Scoring
from pipeline.score.decay import decayed

STAGES = ("lead", "mql", "sql")
MAX_SEEN = 64  # recent event ids kept per profile for deduplication
MAX_COUNT_ENTRIES = 200


@dataclass(frozen=True)
class ScoreDelta:
    """One change of a score: ``delta`` points from ``rule`` caused by ``event_id``."""

    rule: str
    delta: float
    event_id: str | None
    score: float
    stage: str


@dataclass
class Profile:
    """Behavioural state of one subject; serialised with ``to_dict``/``from_dict``."""

    score: float = 0.0
    as_of: int = 0  # epoch ms the score value refers to
    stage: str = "lead"
    caps: dict[str, list[int]] = field(default_factory=dict)  # rule → [bucket, count]
    attribute_points: dict[str, float] = field(default_factory=dict)
    attribute_at: dict[str, int] = field(default_factory=dict)  # attribute rule → granted ms
    counts: dict[str, list[list[Any]]] = field(default_factory=dict)  # trigger → [[ms, id], …]
    fired: dict[str, int] = field(default_factory=dict)  # trigger rule → last fired ms
    sent: dict[str, list[int]] = field(default_factory=dict)  # channel → fired ms
    cancel_seen: dict[str, int] = field(default_factory=dict)  # trigger → last cancel match ms
    pending: list[dict[str, Any]] = field(default_factory=list)  # delayed triggers
    web: list[dict[str, Any]] = field(default_factory=list)  # active web triggers
    seen: list[str] = field(default_factory=list)  # recent event ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "as_of": self.as_of,
            "stage": self.stage,
            "caps": self.caps,
            "attribute_points": self.attribute_points,
            "attribute_at": self.attribute_at,
            "counts": self.counts,
            "fired": self.fired,
            "sent": self.sent,
            "cancel_seen": self.cancel_seen,
            "pending": self.pending,
            "web": self.web,
            "seen": self.seen,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Profile:
        if not data:
            return cls()
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def score_at(self, at_ms: int, half_life: Any) -> float:
        """The score decayed to ``at_ms``."""
        return decayed(self.score, self.as_of, at_ms, half_life) if self.as_of else self.score

    def remember(self, event_id: str) -> bool:
        """Record an event id; False if it was seen already (a duplicate)."""
        if event_id in self.seen:
            return False
        self.seen.append(event_id)
        if len(self.seen) > MAX_SEEN:
            del self.seen[: len(self.seen) - MAX_SEEN]
        return True


_FIELDS = set(Profile.__dataclass_fields__)


def stage_for(score: float, lifecycle: Lifecycle, current: str) -> str:
    """The stage a score reaches; a stage never moves back on its own."""
    reached = "sql" if score >= lifecycle.sql else "mql" if score >= lifecycle.mql else "lead"
    return max(current, reached, key=STAGES.index)


def _add(profile: Profile, points: float, at_ms: int, scoring: Scoring) -> None:
    """Add ``points`` earned at ``at_ms`` to the score, exactly, whatever the arrival order."""
    if at_ms >= profile.as_of:
        profile.score = profile.score_at(at_ms, scoring.half_life) + points
        profile.as_of = at_ms
    else:  # a late event: its points have decayed since it happened
        profile.score += decayed(points, at_ms, profile.as_of, scoring.half_life)
    profile.score = round(profile.score, 6)
    profile.stage = stage_for(profile.score, scoring.lifecycle, profile.stage)


def score_event(
    profile: Profile, event: dict[str, Any], scoring: Scoring, at_ms: int
) -> list[ScoreDelta]:
    """Apply every matching scoring rule to ``profile``; return the changes (maybe none).

    A rule with a cap counts at most ``cap.max`` events per ``cap.per`` window (fixed windows
    aligned to the epoch, so the result does not depend on arrival order within a window).
    """
    deltas = []
    for rule in scoring.rules:
        if not rule.match.matches(event):
            continue
        if rule.cap is not None:
            period_ms = int(rule.cap.per.total_seconds() * 1000) or 1
            bucket = at_ms // period_ms
            current = profile.caps.get(rule.id)
            count = current[1] if current and current[0] == bucket else 0
            if count >= rule.cap.max:
                continue
            if current is None or current[0] <= bucket:
                profile.caps[rule.id] = [bucket, count + 1]
        _add(profile, rule.points, at_ms, scoring)
        deltas.append(ScoreDelta(rule.id, rule.points, event.get("event_id"), profile.score,
                                 profile.stage))  # fmt: skip
    return deltas


def attribute_matches(rule: AttributeRule, attributes: dict[str, Any]) -> bool:
    value = attributes.get(rule.field)
    if value is None or value == "":
        return False
    if rule.equals is not None:
        return _text(value) == _text(rule.equals)
    if rule.contains is not None:
        return rule.contains.lower() in _text(value)
    if rule.in_ is not None:
        return _text(value) in {_text(v) for v in rule.in_}
    return False


def score_attributes(
    profile: Profile, attributes: dict[str, Any], scoring: Scoring, at_ms: int
) -> list[ScoreDelta]:
    """Grant attribute rules that now hold and withdraw those that no longer do."""
    deltas = []
    for rule in scoring.attributes:
        holds = attribute_matches(rule, attributes)
        applied = profile.attribute_points.get(rule.id)
        if holds and applied is None:
            profile.attribute_points[rule.id] = rule.points
            profile.attribute_at[rule.id] = at_ms
            _add(profile, rule.points, at_ms, scoring)
            deltas.append(ScoreDelta(rule.id, rule.points, None, profile.score, profile.stage))
        elif not holds and applied is not None:
            del profile.attribute_points[rule.id]
            # Withdraw what the grant is still worth: its points have decayed with the rest of
            # the score since it was granted (withdrawing them whole would push the score below
            # what the contact's behaviour earned).
            granted = profile.attribute_at.pop(rule.id, None)
            points = applied
            if granted is not None:
                points = round(decayed(applied, granted, at_ms, scoring.half_life), 6)
            _add(profile, -points, at_ms, scoring)
            deltas.append(ScoreDelta(rule.id, -points, None, profile.score, profile.stage))
    return deltas


def absorb(
    contact: Profile, anonymous: Profile, scoring: Scoring, at_ms: int, event_id: str | None
) -> ScoreDelta | None:
    """A cookie's first link: its anonymous score, caps and counters join the contact.

    Anonymous-only trigger state (pending and active web triggers) stays behind: such rules do
    not apply to an identified contact.
    """
    for rule_id, (bucket, count) in anonymous.caps.items():
        mine = contact.caps.get(rule_id)
        if mine is None or mine[0] < bucket:
            contact.caps[rule_id] = [bucket, count]
        elif mine[0] == bucket:
            mine[1] += count
    for rule_id, entries in anonymous.counts.items():
        merged = {entry[1]: entry for entry in contact.counts.get(rule_id, [])}
        merged.update({entry[1]: entry for entry in entries})
        contact.counts[rule_id] = sorted(merged.values())[-MAX_COUNT_ENTRIES:]
    for rule_id, at in anonymous.cancel_seen.items():
        contact.cancel_seen[rule_id] = max(at, contact.cancel_seen.get(rule_id, 0))
    points = anonymous.score_at(at_ms, scoring.half_life) if anonymous.as_of else 0.0
    if points == 0:
        return None
    _add(contact, points, at_ms, scoring)
    return ScoreDelta("anonymous_history", round(points, 6), event_id, contact.score, contact.stage)


def _text(value: Any) -> str:
    return str(value).strip().lower()
