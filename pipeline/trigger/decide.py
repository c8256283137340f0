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

Example::

    outcome = on_event(profile, subject, event, rules.triggers, at_ms)
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
from pipeline.score.profile import MAX_COUNT_ENTRIES, Profile

TRIGGER_NAMESPACE = uuid.UUID("c3a9d3f2-5b0e-5f1e-9a57-4d2f6e8b1a10")
DEFAULT_LOOKBACK = timedelta(days=30)
WEB_ACTIVE = timedelta(days=1)  # how long a fired web trigger shows in /v1/profile (no once_per)


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
    profile: Profile,
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


def _cancelled(rule: TriggerRule, profile: Profile, cause_ms: int) -> bool:
    seen = profile.cancel_seen.get(rule.id)
    return seen is not None and seen >= cause_ms - _lookback(rule)


def _occur(
    rule: TriggerRule,
    subject: Subject,
    profile: Profile,
    rules: Triggers,
    cause_ms: int,
    cause_ids: list[str],
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
    reason = blocked(rule, subject, profile, rules, cause_ms, frequency=not rule.delay)
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
    if rule.delay:
        profile.pending.append(pending)
        outcome.scheduled.append(pending)
        return outcome
    outcome.fired.append(_fire(rule, subject, profile, pending, cause_ms))
    return outcome


def _fire(
    rule: TriggerRule, subject: Subject, profile: Profile, pending: dict[str, Any], now_ms: int
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
        "score": round(profile.score, 3),
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
    profile: Profile, subject: Subject, event: dict[str, Any], rules: Triggers, at_ms: int
) -> Outcome:
    """Evaluate every trigger rule against one (non-automated, new) event."""
    outcome = Outcome()
    event_id = str(event.get("event_id"))
    for rule in rules.rules:
        if rule.cancel_if and any(m.matches(event) for m in rule.cancel_if):
            profile.cancel_seen[rule.id] = max(at_ms, profile.cancel_seen.get(rule.id, 0))
        applicable = applies(rule, subject)
        when = rule.when
        if when.event is not None and when.event.matches(event):
            if applicable:
                outcome.extend(_occur(rule, subject, profile, rules, at_ms, [event_id]))
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
                outcome.extend(_occur(rule, subject, profile, rules, at_ms, cause))
    return outcome


def on_score(
    profile: Profile,
    subject: Subject,
    before: float,
    rules: Triggers,
    at_ms: int,
    event_id: str | None,
) -> Outcome:
    """Score threshold rules: an upward crossing of ``score_at_least`` is an occurrence."""
    outcome = Outcome()
    for rule in rules.rules:
        threshold = rule.when.score_at_least
        if threshold is None or not applies(rule, subject):
            continue
        if before < threshold <= profile.score:
            cause = [event_id] if event_id else [f"score@{at_ms}"]
            outcome.extend(_occur(rule, subject, profile, rules, at_ms, cause))
    return outcome


def fire_due(profile: Profile, subject: Subject, rules: Triggers, now_ms: int) -> Outcome:
    """Fire the pending triggers due by ``now_ms`` whose conditions still hold; drop the rest."""
    outcome = Outcome()
    keep = []
    by_id = {rule.id: rule for rule in rules.rules}
    for pending in profile.pending:
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
        outcome.fired.append(_fire(rule, subject, profile, pending, now_ms))
    profile.pending = keep
    return outcome


def next_due(profile: Profile) -> int | None:
    return min((p["due_at"] for p in profile.pending), default=None)
