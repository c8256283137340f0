"""A profile: what the pipeline knows of one subject's score (an anonymous cookie or a
contact): score and lifecycle stage, per-rule caps (trigger state: ``pipeline.trigger.state``).

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


@dataclass(frozen=True)
class ScoreDelta:
    """One change of a score: ``delta`` points from ``rule`` caused by ``event_id``; ``score``
    is the value afterwards as of ``as_of`` (epoch ms; 0 when unknown)."""

    rule: str
    delta: float
    event_id: str | None
    score: float
    stage: str
    as_of: int = field(default=0, compare=False)


@dataclass
class Profile:
    """Behavioural state of one subject; serialised with ``to_dict``/``from_dict``."""

    score: float = 0.0
    as_of: int = 0  # epoch ms the score value refers to
    stage: str = "lead"
    # rule → {window index (text): [[ms, event_id], …] of the events that count in it}
    caps: dict[str, dict[str, list[list[Any]]]] = field(default_factory=dict)
    attribute_points: dict[str, float] = field(default_factory=dict)
    attribute_at: dict[str, int] = field(default_factory=dict)  # attribute rule → granted ms
    seen: list[str] = field(default_factory=list)  # recent event ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "as_of": self.as_of,
            "stage": self.stage,
            "caps": self.caps,
            "attribute_points": self.attribute_points,
            "attribute_at": self.attribute_at,
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


CAP_WINDOWS_KEPT = 3  # windows of a capped rule remembered, counting back from the newest


def _capped(
    profile: Profile, rule_id: str, cap: Any, at_ms: int, event_id: str
) -> tuple[bool, list[Any] | None]:
    """Whether an event counts under its rule's cap, and the counted event it displaces.

    The events that count in a window are always its *earliest* ``cap.max`` events, whatever
    the order they arrive in: a late event from earlier in a full window takes the place of the
    latest counted one. So the score does not depend on arrival order (several cookies of one
    contact interleave differently from run to run).
    """
    period_ms = int(cap.per.total_seconds() * 1000) or 1
    window = str(at_ms // period_ms)
    windows = profile.caps.setdefault(rule_id, {})
    if not isinstance(windows, dict):  # state written before windows were kept
        windows = profile.caps[rule_id] = {}
    counted = windows.setdefault(window, [])
    if any(entry[1] == event_id for entry in counted):
        return False, None
    entry = [at_ms, event_id]
    if len(counted) < cap.max:
        counted.append(entry)
        counted.sort()
        displaced = None
    elif entry < counted[-1]:
        displaced = counted.pop()
        counted.append(entry)
        counted.sort()
    else:
        return False, None
    newest = max(int(w) for w in windows)
    for old in [w for w in windows if int(w) <= newest - CAP_WINDOWS_KEPT]:
        del windows[old]
    return True, displaced


def score_event(
    profile: Profile, event: dict[str, Any], scoring: Scoring, at_ms: int
) -> list[ScoreDelta]:
    """Apply every matching scoring rule to ``profile``; return the changes (maybe none).

    A rule with a cap counts at most ``cap.max`` events per ``cap.per`` window (fixed windows
    aligned to the epoch): the earliest ones, so arrival order does not change the result.
    """
    deltas = []
    event_id = str(event.get("event_id"))
    for rule in scoring.rules_for(event.get("type")):
        if not rule.match.matches(event):
            continue
        before = profile.score_at(max(profile.as_of, at_ms), scoring.half_life)
        if rule.cap is not None:
            counts, displaced = _capped(profile, rule.id, rule.cap, at_ms, event_id)
            if not counts:
                continue
            if displaced is not None:  # its points are withdrawn as of when they were earned
                _add(profile, -rule.points, int(displaced[0]), scoring)
        _add(profile, rule.points, at_ms, scoring)
        delta = round(profile.score - before, 6)
        deltas.append(
            ScoreDelta(
                rule.id, delta, event.get("event_id"), profile.score, profile.stage, profile.as_of
            )
        )
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
    profile: Profile,
    attributes: dict[str, Any],
    scoring: Scoring,
    at_ms: int,
    event_id: str | None = None,
) -> list[ScoreDelta]:
    """Grant attribute rules that now hold and withdraw those that no longer do; ``event_id``
    is the event whose traits changed the attributes (a form submit), None for a CRM update."""
    deltas = []
    for rule in scoring.attributes:
        holds = attribute_matches(rule, attributes)
        applied = profile.attribute_points.get(rule.id)
        if holds and applied is None:
            profile.attribute_points[rule.id] = rule.points
            profile.attribute_at[rule.id] = at_ms
            _add(profile, rule.points, at_ms, scoring)
            deltas.append(
                ScoreDelta(
                    rule.id, rule.points, event_id, profile.score, profile.stage, profile.as_of
                )
            )
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
            deltas.append(
                ScoreDelta(rule.id, -points, event_id, profile.score, profile.stage, profile.as_of)
            )
    return deltas


def absorb(
    contact: Profile, anonymous: Profile, scoring: Scoring, at_ms: int, event_id: str | None
) -> ScoreDelta | None:
    """A cookie's first link: its anonymous score and caps join the contact (its trigger state:
    ``TriggerState.absorb``)."""
    for rule_id, windows in anonymous.caps.items():
        cap = next((r.cap for r in scoring.rules if r.id == rule_id and r.cap is not None), None)
        if cap is None or not isinstance(windows, dict):
            continue
        for entries in windows.values():
            for at, counted_id in list(entries):
                counts, displaced = _capped(contact, rule_id, cap, int(at), str(counted_id))
                if not counts:  # the contact's own events fill that window: withdraw this one
                    points = next(r.points for r in scoring.rules if r.id == rule_id)
                    _add(anonymous, -points, int(at), scoring)
                elif displaced is not None:
                    points = next(r.points for r in scoring.rules if r.id == rule_id)
                    _add(contact, -points, int(displaced[0]), scoring)
    points = anonymous.score_at(at_ms, scoring.half_life) if anonymous.as_of else 0.0
    if points == 0:
        return None
    _add(contact, points, at_ms, scoring)
    return ScoreDelta(
        "anonymous_history", round(points, 6), event_id, contact.score, contact.stage, contact.as_of
    )


def _text(value: Any) -> str:
    return str(value).strip().lower()
