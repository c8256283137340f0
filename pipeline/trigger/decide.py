"""Trigger evaluation over a profile: pure functions, so every rule is testable without a broker.

- ``on_event``: an event may cancel pending triggers, count towards ``at_least N within D``,
  or match ``when.event``; an occurrence schedules a trigger (``delay``) or fires it at once.
- ``on_score``: crossing a ``score_at_least`` threshold upwards is an occurrence.
- ``fire_due``: pending triggers whose time has come fire, after re-checking every condition.

Every occurrence passes ``once_per`` (none: once ever); every firing re-checks ``requires``,
``suppress_if``, the channel's frequency cap, consent, and ``cancel_if``. ``cancel_if`` looks at
matching events since the cause minus the rule's look-back (``once_per``, else 30 days), so a
trial sign-up yesterday cancels today's "offer a trial" as well as one made after it. The
``email`` channel always needs consent and no hard bounce, whether or not the rule requires
``consent_email``. A delayed trigger meets its channel's frequency cap when it fires.

Trigger ids are ``uuid5(TRIGGER_NAMESPACE, "rule|subject|cause event")``: a replay of the same
input yields the same ids.

Each function reads and updates the subject's ``TriggerState`` (``pipeline.trigger.state``);
``score`` is the subject's score at that moment, which a fired trigger reports.

Example::

    outcome = on_event(state, subject, event, rules.triggers, at_ms, score=12.0)
    outcome.fired       # trigger messages to publish now
    outcome.skipped     # [(rule, reason)] for metrics
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pipeline.clock import from_millis
from pipeline.rules.models import TriggerRule, Triggers
from pipeline.trigger.state import MAX_COUNT_ENTRIES, TriggerState

TRIGGER_NAMESPACE = uuid.UUID("c3a9d3f2-5b0e-5f1e-9a57-4d2f6e8b1a10")
DEFAULT_LOOKBACK = timedelta(days=30)
WEB_ACTIVE = timedelta(days=1)  # how long a fired web trigger shows in /v1/profile (no once_per)
MAX_MATCHES = 20  # anonymous history matches kept per event rule


@dataclass(frozen=True)
class Subject:
    """Who a profile belongs to, and what the contact record says about them."""

    contact_id: str | None
    anonymous_id: str | None
    email: str | None = None
    consent_email: bool = False
    email_blocked: str | None = None
    crm_status: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def identified(self) -> bool:
        return self.contact_id is not None

    @property
    def key(self) -> str:
        return self.contact_id or f"aid:{self.anonymous_id}"


IDENTIFIED = Subject(contact_id="-", anonymous_id=None)


@dataclass
class Outcome:
    fired: list[dict[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.fired += other.fired
        self.scheduled += other.scheduled
        self.skipped += other.skipped


def trigger_id(rule_id: str, subject_key: str, cause: str) -> str:
    return str(uuid.uuid5(TRIGGER_NAMESPACE, f"{rule_id}|{subject_key}|{cause}"))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def applies(rule: TriggerRule, subject: Subject) -> bool:
    """Whether a rule evaluates on this kind of subject at all."""
    if "anonymous" in rule.requires:
        return not subject.identified
    if "identified" in rule.requires or "consent_email" in rule.requires:
        return subject.identified
    return True


def blocked(
    rule: TriggerRule,
    subject: Subject,
    profile: TriggerState,
    rules: Triggers,
    now_ms: int,
    *,
    frequency: bool = True,
) -> str | None:
    """Why a trigger may not fire now, or None (``frequency``: also check the channel's cap)."""
    if "identified" in rule.requires and not subject.identified:
        return "not_identified"
    if "anonymous" in rule.requires and subject.identified:
        return "identified"
    if rule.channel == "email":
        if subject.email_blocked:
            return subject.email_blocked
        # Automated mail needs consent whatever the rule says (an unsubscribe stops it at once).
        if not subject.consent_email:
            return "no_consent"
    elif "consent_email" in rule.requires and not subject.consent_email:
        return "no_consent"
    if subject.crm_status and subject.crm_status in rule.suppress_if.crm_status:
        return f"suppressed:{subject.crm_status}"
    cap = rules.frequency_caps.get(rule.channel)
    if cap is not None and frequency:
        recent = [t for t in profile.sent.get(rule.channel, []) if now_ms - t < _ms(cap.per)]
        profile.sent[rule.channel] = recent
        if len(recent) >= cap.max:
            return "frequency_cap"
    return None


def _lookback(rule: TriggerRule) -> int:
    return _ms(rule.once_per or DEFAULT_LOOKBACK)


def _cancelled(rule: TriggerRule, profile: TriggerState, cause_ms: int) -> bool:
    seen = profile.cancel_seen.get(rule.id)
    return seen is not None and seen >= cause_ms - _lookback(rule)


def _occur(
    rule: TriggerRule,
    subject: Subject,
    profile: TriggerState,
    rules: Triggers,
    cause_ms: int,
    cause_ids: list[str],
    *,
    score: float,
    schedule: bool = False,
) -> Outcome:
    outcome = Outcome()
    if any(p["rule"] == rule.id for p in profile.pending):
        return outcome  # already scheduled
    last = profile.fired.get(rule.id)
    if last is not None and (rule.once_per is None or cause_ms - last < _ms(rule.once_per)):
        outcome.skipped.append((rule.id, "once_per"))
        return outcome
    if _cancelled(rule, profile, cause_ms):
        outcome.skipped.append((rule.id, "cancel_if"))
        return outcome
    # A delayed trigger meets the frequency cap when it is sent (``fire_due``), not now: today's
    # full cap says nothing about tomorrow's.
    delayed = bool(rule.delay) or schedule
    reason = blocked(rule, subject, profile, rules, cause_ms, frequency=not delayed)
    if reason is not None:
        outcome.skipped.append((rule.id, reason))
        return outcome
    cause = cause_ids[-1] if cause_ids else str(cause_ms)
    pending = {
        "trigger_id": trigger_id(rule.id, subject.key, cause),
        "rule": rule.id,
        "cause_at": cause_ms,
        "due_at": cause_ms + _ms(rule.delay),
        "cause_event_ids": cause_ids,
    }
    profile.fired[rule.id] = cause_ms  # once_per counts from the occurrence
    if delayed:
        profile.pending.append(pending)
        outcome.scheduled.append(pending)
        return outcome
    outcome.fired.append(_fire(rule, subject, profile, pending, cause_ms, score))
    return outcome


def _fire(
    rule: TriggerRule,
    subject: Subject,
    profile: TriggerState,
    pending: dict[str, Any],
    now_ms: int,
    score: float,
) -> dict[str, Any]:
    profile.sent.setdefault(rule.channel, []).append(now_ms)
    if rule.channel == "web":
        active_until = now_ms + _ms(rule.once_per or WEB_ACTIVE)
        profile.web = [w for w in profile.web if w["rule"] != rule.id and w["until"] > now_ms]
        profile.web.append(
            {"rule": rule.id, "trigger_id": pending["trigger_id"], "until": active_until}
        )
    message: dict[str, Any] = {
        "trigger_id": pending["trigger_id"],
        "rule": rule.id,
        "channel": rule.channel,
        "fired_at": from_millis(now_ms),
        "due_at": from_millis(pending["due_at"]),
        "score": round(score, 3),
        "cause_event_ids": pending["cause_event_ids"],
        "attributes": subject.attributes,
    }
    if subject.contact_id:
        message["contact_id"] = subject.contact_id
    if subject.anonymous_id:
        message["anonymous_id"] = subject.anonymous_id
    if subject.email and rule.channel in ("email", "sales"):
        message["email"] = subject.email
    return message


def on_event(
    profile: TriggerState,
    subject: Subject,
    event: dict[str, Any],
    rules: Triggers,
    at_ms: int,
    score: float = 0.0,
) -> Outcome:
    """Evaluate every trigger rule against one (non-automated, new) event."""
    outcome = Outcome()
    event_id = str(event.get("event_id"))
    for rule in rules.rules_for(event.get("type")):
        if rule.cancel_if and any(m.matches(event) for m in rule.cancel_if):
            profile.cancel_seen[rule.id] = max(at_ms, profile.cancel_seen.get(rule.id, 0))
        applicable = applies(rule, subject)
        when = rule.when
        if when.event is not None and when.event.matches(event):
            if applicable:
                outcome.extend(
                    _occur(rule, subject, profile, rules, at_ms, [event_id], score=score)
                )
            elif not subject.identified and applies(rule, IDENTIFIED):
                # anonymous history: counts for the contact on the cookie's first link
                matches = profile.matches.setdefault(rule.id, [])
                if all(m[1] != event_id for m in matches):
                    matches.append([at_ms, event_id])
                    matches.sort()
                    del matches[:-MAX_MATCHES]
        elif when.count is not None and when.count.match.matches(event):
            # Counted even where the rule does not apply (an anonymous cookie, for an identified
            # rule): on the cookie's first link its counters become the contact's.
            window = _ms(when.count.within)
            entries = [e for e in profile.counts.get(rule.id, []) if at_ms - e[0] < window]
            if all(e[1] != event_id for e in entries):
                entries.append([at_ms, event_id])
            entries.sort()
            profile.counts[rule.id] = entries[-MAX_COUNT_ENTRIES:]
            if applicable and len(entries) >= when.count.at_least:
                cause = [e[1] for e in entries[-when.count.at_least :]]
                outcome.extend(_occur(rule, subject, profile, rules, at_ms, cause, score=score))
    return outcome


def on_history(
    profile: TriggerState,
    history: TriggerState,
    subject: Subject,
    rules: Triggers,
    at_ms: int,
    score: float = 0.0,
) -> Outcome:
    """A cookie's first link at ``at_ms``: its anonymous ``history`` counts for the contact's
    identified-only triggers (CONTRACT §5 "anonymous history and triggers").

    A count rule counts the merged matching events inside its window at link time (``absorb``
    merged the counters). An event rule whose match lies in the history is scheduled from that
    event's time (``due_at`` = event time + delay) and fires now if that moment has passed,
    unless the event is older than the rule's ``history_within``. ``once_per``, ``cancel_if``,
    consent, caps and suppression apply as always.
    """
    outcome = Outcome()
    for rule in rules.rules:
        if not applies(rule, subject):
            continue
        when = rule.when
        if when.count is not None and history.counts.get(rule.id):
            window = _ms(when.count.within)
            entries = [e for e in profile.counts.get(rule.id, []) if at_ms - e[0] < window]
            if len(entries) >= when.count.at_least:
                cause = [e[1] for e in entries[-when.count.at_least :]]
                outcome.extend(_occur(rule, subject, profile, rules, at_ms, cause, score=score))
        elif when.event is not None:
            oldest = at_ms - _ms(rule.history_window)
            for at, event_id in sorted(history.matches.get(rule.id, [])):
                if at < oldest:
                    outcome.skipped.append((rule.id, "history_too_old"))
                    continue
                occurrence = _occur(
                    rule, subject, profile, rules, int(at), [str(event_id)], score=score,
                    schedule=True,
                )  # fmt: skip
                outcome.extend(occurrence)
    outcome.extend(fire_due(profile, subject, rules, at_ms, score))  # whose moment has passed
    return outcome


def on_score(
    profile: TriggerState,
    subject: Subject,
    before: float,
    after: float,
    rules: Triggers,
    at_ms: int,
    event_id: str | None,
) -> Outcome:
    """Score threshold rules: an upward crossing of ``score_at_least`` (from ``before`` to
    ``after``) is an occurrence."""
    outcome = Outcome()
    for rule in rules.rules:
        threshold = rule.when.score_at_least
        if threshold is None or not applies(rule, subject):
            continue
        if before < threshold <= after:
            cause = [event_id] if event_id else [f"score@{at_ms}"]
            outcome.extend(_occur(rule, subject, profile, rules, at_ms, cause, score=after))
    return outcome


def fire_due(
    profile: TriggerState, subject: Subject, rules: Triggers, now_ms: int, score: float = 0.0
) -> Outcome:
    """Fire the pending triggers due by ``now_ms`` whose conditions still hold; drop the rest."""
    outcome = Outcome()
    keep = []
    by_id = {rule.id: rule for rule in rules.rules}
    # in due order (they meet caps in that order; ties: as scheduled), however scheduled
    for pending in sorted(profile.pending, key=lambda p: int(p["due_at"])):
        if pending["due_at"] > now_ms:
            keep.append(pending)
            continue
        rule = by_id.get(pending["rule"])
        if rule is None:
            outcome.skipped.append((pending["rule"], "rule_removed"))
            continue
        if _cancelled(rule, profile, pending["cause_at"]):
            outcome.skipped.append((rule.id, "cancel_if"))
            continue
        reason = blocked(rule, subject, profile, rules, now_ms)
        if reason is not None:
            outcome.skipped.append((rule.id, reason))
            continue
        outcome.fired.append(_fire(rule, subject, profile, pending, now_ms, score))
    profile.pending = keep
    return outcome


def next_due(profile: TriggerState) -> int | None:
    return profile.next_due()
