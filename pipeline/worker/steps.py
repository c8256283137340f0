"""What the worker does with one message, as pure functions over plain state: the two stages of
the worker, usable without a broker (tests, ``ma-pipeline demo``).

Stage 1, ``cookie_step`` (state keyed by ``anonymous_id``, input ``ma.events``): deduplicate,
decide identity, score and trigger anonymous visitors, and forward each event resolved to its
contact to stage 2 on the internal ``contact-work`` topic (an event still anonymous goes to
``anonymous-events``, for the sink only).

Stage 2, ``contact_step`` (state keyed by ``contact_id``, input ``contact-work`` and
``ma.contact-updates``): merge contact updates, absorb a cookie's anonymous history on its first
link, score, evaluate triggers, and keep the contact's set of cookies within its limit.

Each returns ``Out`` records; the agents send them and store the state.

Example::

    record = CookieRecord()
    outs = cookie_step(record, event, rules, anonymous_id)
    [o.topic for o in outs]   # ['identities', 'contact-work', 'contact-work', ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from pipeline.clock import from_millis, to_millis
from pipeline.contacts.merge import ContactState, apply_update, set_consent
from pipeline.identity import is_garbage_identifier, user_key
from pipeline.rules.models import Rules
from pipeline.score.profile import Profile, ScoreDelta, absorb, score_attributes, score_event
from pipeline.stitch.decide import Cookie, Decision, evidence_for, refusal_for
from pipeline.stitch.decide import decide as decide_identity
from pipeline.topics import ANONYMOUS_EVENTS, CONTACT_WORK, COOKIE_COMMANDS, DECISIONS
from pipeline.trigger.decide import (
    Outcome,
    Subject,
    fire_due,
    on_event,
    on_history,
    on_score,
)
from pipeline.trigger.state import TriggerState
from pipeline.worker.order import INBOX_LIMIT, hold, order_key


class Out(NamedTuple):
    """A record to produce: topic short name (without prefix), key, JSON value (None: tombstone),
    and a partition when it is not the key's (watermarks go to every partition). A named tuple:
    the worker makes about four per event, and a frozen dataclass costs twice as much to make."""

    topic: str
    key: str | None
    value: dict[str, Any] | None
    partition: int | None = None


@dataclass
class Counters:
    """What happened, for metrics: names → counts."""

    values: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n


#: What stage 1 needs of every ``ma.events`` value (the collector always sets them).
REQUIRED_EVENT_FIELDS = ("event_id", "type", "received_at")


def check_event(value: Any) -> dict[str, Any]:
    """``value`` if it is an event stage 1 can take, else ``ValueError`` saying what is wrong
    (for the dead letter of a record some other producer wrote to ``ma.events``).

    An ``anonymous_id`` such as ``"undefined"`` or ``"null"`` (which the collector never
    writes) is dropped: the event is kept, as a cookieless one, and links no cookie.
    """
    if not isinstance(value, dict):
        raise ValueError(f"ma.events value: expected a JSON object, got a {_json_kind(value)}")
    missing = [name for name in REQUIRED_EVENT_FIELDS if value.get(name) is None]
    if missing:
        raise ValueError(
            f"ma.events value: missing {', '.join(missing)}; every event needs "
            f"{', '.join(REQUIRED_EVENT_FIELDS)} (the collector sets them)"
        )
    aid = value.get("anonymous_id")
    if aid is not None and is_garbage_identifier(aid):
        value["anonymous_id"] = None
    return value


def check_update(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, as every ``ma.contact-updates`` value is."""
    if not isinstance(value, dict):
        raise ValueError(
            f"ma.contact-updates value: expected a JSON object, got a {_json_kind(value)}"
        )
    return value


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def event_time(event: dict[str, Any]) -> int:
    """An event's ``received_at`` in epoch milliseconds."""
    at = event["received_at"]
    if isinstance(at, str):
        return _iso_millis(at)
    if isinstance(at, datetime):
        return to_millis(at)
    if isinstance(at, int | float):
        return int(at)
    return _iso_millis(str(at))


@lru_cache(maxsize=16_384)
def _iso_millis(text: str) -> int:
    # each event's time is read by both stages, and in each more than once: parsed once
    return to_millis(datetime.fromisoformat(text.replace("Z", "+00:00")))


# -- stage 1 --------------------------------------------------------------------------------------
@dataclass
class CookieRecord:
    """Stage-1 state of one key of ``ma.events`` (usually an ``anonymous_id``)."""

    cookie: Cookie = field(default_factory=Cookie)
    profile: Profile = field(default_factory=Profile)  # the anonymous score
    offsets: dict[str, int] = field(default_factory=dict)  # see ``already_applied``
    triggers: TriggerState = field(default_factory=TriggerState)  # the anonymous trigger state

    def to_dict(self) -> dict[str, Any]:
        return {
            "cookie": self.cookie.to_dict(),
            "profile": self.profile.to_dict(),
            "triggers": self.triggers.to_dict(),
            "offsets": self.offsets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CookieRecord:
        if not data:
            return cls()
        return cls(
            Cookie.from_dict(data.get("cookie")),
            Profile.from_dict(data.get("profile")),
            dict(data.get("offsets") or {}),
            # state written before trigger state had its own place kept it in the profile
            TriggerState.from_dict(data.get("triggers") or data.get("profile")),
        )


def already_applied(offsets: dict[str, int], topic: str, partition: int, offset: int) -> bool:
    """True when this input record is already reflected in the state; else record it.

    A key's records always come from one partition of each input topic, so remembering the
    last offset applied per ``topic:partition`` in the key's own state makes a replay after a
    crash exact: what the recovered state has seen is skipped, whatever its event ids.
    """
    source = f"{topic}:{partition}"
    if offset <= offsets.get(source, -1):
        return True
    offsets[source] = offset
    return False


def _score_out(
    deltas: list[ScoreDelta], contact_id: str | None, anonymous_id: str | None, at_ms: int
) -> list[Out]:
    key = contact_id or anonymous_id
    return [
        Out(
            "scores",
            key,
            {
                "contact_id": contact_id,
                "anonymous_id": anonymous_id,
                "score": round(d.score, 3),
                "delta": round(d.delta, 3),
                "rule": d.rule,
                "event_id": d.event_id,
                "lifecycle_stage": d.stage,
                "at": from_millis(d.as_of or at_ms),
            },
        )
        for d in deltas
    ]


def _trigger_out(
    outcome: Outcome,
    subject: Subject,
    counters: Counters,
    at: int,
    event_id: str | None = None,
) -> list[Out]:
    """The fired triggers on ``ma.triggers``; each rule skipped, with its reason, on
    ``ma.x.decisions`` (at ``at``, the event's time or the due release's; ``event_id``: the
    event it was decided on, if any)."""
    key = subject.contact_id or subject.anonymous_id
    outs = [Out("triggers", key, message) for message in outcome.fired]
    seen: set[tuple[str, str]] = set()
    for rule, reason in outcome.skipped:
        counters.add(f"trigger_skipped:{reason.split(':')[0]}")
        if (rule, reason) in seen:
            continue
        seen.add((rule, reason))
        decision = {
            "contact_id": subject.contact_id,
            "anonymous_id": None if subject.contact_id else subject.anonymous_id,
            "at": from_millis(at),
            "rule": rule,
            "decision": "skipped",
            "reason": reason,
            "event_id": event_id,
        }
        outs.append(Out(DECISIONS, key, decision))
    for pending in outcome.scheduled:  # a delayed trigger: when it is due (it may still be
        # cancelled or suppressed then: that is a decision of its own)
        scheduled = {
            "contact_id": subject.contact_id,
            "anonymous_id": None if subject.contact_id else subject.anonymous_id,
            "at": from_millis(at),
            "rule": pending["rule"],
            "decision": "scheduled",
            "reason": "due_at:"
            + from_millis(int(pending["due_at"]))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "event_id": event_id,
        }
        outs.append(Out(DECISIONS, key, scheduled))
    counters.add("triggers_fired", len(outcome.fired))
    counters.add("triggers_scheduled", len(outcome.scheduled))
    return outs


def cookie_step(
    record: CookieRecord,
    event: dict[str, Any],
    rules: Rules,
    counters: Counters | None = None,
) -> list[Out]:
    """Stage 1 for one event (see the module docstring); mutates ``record``."""
    counters = counters or Counters()
    aid: str | None = event.get("anonymous_id")
    event_id = str(event["event_id"])
    at = event_time(event)
    if not record.profile.remember(event_id):
        counters.add("duplicates")
        return []
    outs: list[Out] = []
    if aid is None:  # a server event or a garbage cookie: no identity to decide
        contact_id = event.get("contact_id") or evidence_for(event)
        resolved = {**event, "contact_id": contact_id, "pre_identification": False}
        outs += _contact_update_from_form(event, contact_id)
        outs.append(_forward(resolved, contact_id or event_id))
        return outs
    cookie = record.cookie
    was_unlinked_forever = not cookie.ever_linked
    refused = refusal_for(event, cookie)  # before the decision may flag the cookie
    decision = decide_identity(cookie, event, rules.identity, at)
    outs += _identity_outs(record, decision, aid, event_id, at, counters, form=event)
    outs += _ask_user(record, event, aid, at)
    contact_id = decision.contact_id
    resolved = {
        **event,
        "contact_id": contact_id,
        "pre_identification": contact_id is None and was_unlinked_forever,
    }
    if refused is not None:
        resolved["identity_refused"] = refused
        counters.add("identity_refused")
    if contact_id is None and not event.get("automated"):
        outs += _anonymous_scoring(record, resolved, rules, aid, at, counters)
    outs.append(_forward(resolved, contact_id or aid))
    return outs


def _identity_outs(
    record: CookieRecord,
    decision: Decision,
    aid: str,
    event_id: str,
    at: int,
    counters: Counters,
    form: dict[str, Any] | None = None,
) -> list[Out]:
    """What an identity decision on cookie ``aid`` sends: its ``ma.identities`` record, the
    notices to the contacts it left and joined, a form's traits (``form``), then on a first
    link the cookie's anonymous history (which the record then no longer holds)."""
    outs: list[Out] = []
    if decision.action != "none":
        counters.add(f"identity_{decision.action}")
        outs.append(
            Out(
                "identities",
                aid,
                {
                    "anonymous_id": aid,
                    "contact_id": decision.cookie_contact_id,
                    "previous_contact_id": decision.previous_contact_id,
                    "reason": decision.reason,
                    "event_id": event_id,
                    "at": from_millis(at),
                },
            )
        )
        if decision.previous_contact_id:
            outs.append(
                Out(
                    CONTACT_WORK,
                    decision.previous_contact_id,
                    {"k": "unlinked", "aid": aid, "at": at},
                )
            )
        if decision.cookie_contact_id:
            outs.append(
                Out(CONTACT_WORK, decision.cookie_contact_id, {"k": "linked", "aid": aid, "at": at})
            )
    # a form's traits (consent, title) count before the history it brings in
    if form is not None:
        outs += _contact_update_from_form(form, decision.contact_id)
    if decision.first_link:
        outs.append(
            Out(
                CONTACT_WORK,
                decision.cookie_contact_id,
                {
                    "k": "absorb",
                    "aid": aid,
                    "at": at,
                    "event_id": event_id,
                    "profile": record.profile.to_dict(),
                    "triggers": record.triggers.to_dict(),
                },
            )
        )
        record.profile = Profile(seen=record.profile.seen)
        record.triggers = TriggerState()
    return outs


def _ask_user(record: CookieRecord, event: dict[str, Any], aid: str, at: int) -> list[Out]:
    """A cookie's event that carries a ``user_id``: tell the user record (stage 1, keyed by
    ``user_key``) whom its email names, or ask it whom the ``user_id`` names (it answers with
    a ``link`` command when it knows; ``cookie_command``)."""
    user_id = event.get("user_id")
    if not user_id:
        return []
    key = user_key(event["site_id"], user_id)
    claimed = evidence_for(event)
    if claimed is not None:
        return [Out(COOKIE_COMMANDS, key, {"k": "user", "contact_id": claimed, "at": at})]
    cookie = record.cookie
    if cookie.flagged or (cookie.user_id == user_id and cookie.contact_id is not None):
        return []
    ask = {"k": "whois", "aid": aid, "user_id": user_id, "at": at, "event_id": event["event_id"]}
    return [Out(COOKIE_COMMANDS, key, ask)]


def user_step(
    record: CookieRecord, event: dict[str, Any], key: str, counters: Counters | None = None
) -> list[Out]:
    """Stage 1 for a call that names its person only by ``user_id`` (no cookie; keyed by
    ``user_key``): the user record says whose it is, or it stays anonymous (kept, links
    nothing). An identify with an email teaches the record that contact."""
    counters = counters or Counters()
    if not record.profile.remember(str(event["event_id"])):
        counters.add("duplicates")
        return []
    claimed = evidence_for(event)
    if claimed is not None:
        record.cookie.contact_id = claimed
    contact_id = event.get("contact_id") or claimed or record.cookie.contact_id
    resolved = {**event, "contact_id": contact_id, "pre_identification": False}
    if (refused := refusal_for(event)) is not None:
        resolved["identity_refused"] = refused
        counters.add("identity_refused")
    return [*_contact_update_from_form(event, contact_id), _forward(resolved, contact_id or key)]


def state_key(event: dict[str, Any]) -> str | None:
    """The stage-1 state an ``ma.events`` value belongs to: its cookie, else (a call with only
    a ``user_id``) its user record, else none."""
    aid: str | None = event.get("anonymous_id")
    if aid is not None:
        return aid
    user_id = event.get("user_id")
    if user_id and not event.get("contact_id"):
        return user_key(event["site_id"], user_id)
    return None


def _forward(resolved: dict[str, Any], key: str) -> Out:
    """Stage 1's resolved event: to stage 2 (``contact-work``) when it has a contact, else
    straight to the sink (``anonymous-events``). Stage 1 already scored and triggered an
    anonymous event, and stage 2 would only skip it."""
    topic = CONTACT_WORK if resolved.get("contact_id") else ANONYMOUS_EVENTS
    return Out(topic, key, {"k": "event", "e": resolved})


def _anonymous_scoring(
    record: CookieRecord, event: dict[str, Any], rules: Rules, aid: str, at: int, counters: Counters
) -> list[Out]:
    profile = record.profile
    before = profile.score_at(at, rules.scoring.half_life)
    deltas = score_event(profile, event, rules.scoring, at)
    subject = Subject(contact_id=None, anonymous_id=aid)
    outcome = on_event(record.triggers, subject, event, rules.triggers, at, profile.score)
    if deltas:
        outcome.extend(
            on_score(
                record.triggers, subject, before, profile.score, rules.triggers, at,
                event["event_id"],
            )
        )  # fmt: skip
    return _score_out(deltas, None, aid, at) + _trigger_out(
        outcome, subject, counters, at, event["event_id"]
    )


def _contact_update_from_form(event: dict[str, Any], attributed: str | None = None) -> list[Out]:
    """Form fields, identify traits and a group's company become contact attributes (source
    ``form``/``identify``): a hand-over to stage 2, and the record of it on
    ``ma.contact-updates``. A form or identify with an email is for that email's contact; an
    identify without one (Segment's) and a group are for the contact the event is
    ``attributed`` to, if any."""
    kind = event.get("type")
    if kind not in ("form_submit", "identify", "group"):
        return []
    contact_id = evidence_for(event)
    if contact_id is None and kind != "form_submit":
        contact_id = attributed
    if contact_id is None or not (event.get("email") or event.get("traits")):
        return []
    traits = dict(event.get("traits") or {})
    consent = traits.pop("consent_email", None)
    email = event.get("email")
    update: dict[str, Any] = {
        "contact_id": contact_id,
        "op": "upsert",
        "source": "form" if kind == "form_submit" else "identify",
        "attributes": traits,
        "received_at": event["received_at"],
        "event_id": event["event_id"],
    }
    if email:
        update["email"] = email
    if isinstance(consent, bool) or consent in (
        "true",
        "on",
        "yes",
        "1",
        "false",
        "off",
        "no",
        "0",
    ):
        update["consent_email"] = consent is True or consent in ("true", "on", "yes", "1")
    # Stage 2 applies it from the hand-over, in order with the contact's events; the record
    # on ma.contact-updates is the audit trail of what the form said (stage 2 skips it).
    return [
        Out("contact-updates", contact_id, {**update, "via": "worker"}),
        Out(CONTACT_WORK, contact_id, {"k": "update", **update}),
    ]


# -- stage 2 --------------------------------------------------------------------------------------
@dataclass
class ContactRecord:
    """Stage-2 state of one contact: the merged record, its profile and its cookies."""

    contact: ContactState
    profile: Profile = field(default_factory=Profile)
    cookies: list[list[Any]] = field(default_factory=list)  # [[anonymous_id, linked ms]]
    absorbed: list[str] = field(default_factory=list)  # cookies whose history joined
    erased: bool = False  # ``forget``: the agent deletes the state
    offsets: dict[str, int] = field(default_factory=dict)  # see ``already_applied``
    sources: dict[str, list[int]] = field(default_factory=dict)  # see ``stamp``
    inbox: list[list[Any]] = field(default_factory=list)  # held records: ``pipeline.worker.order``
    applied: int = 0  # the latest event time applied (for counting late records)
    triggers: TriggerState = field(default_factory=TriggerState)

    def to_dict(self) -> dict[str, Any]:
        return {
            "contact": self.contact.to_dict(),
            "profile": self.profile.to_dict(),
            "cookies": self.cookies,
            "absorbed": self.absorbed,
            "offsets": self.offsets,
            "sources": self.sources,
            "inbox": self.inbox,
            "applied": self.applied,
            "triggers": self.triggers.to_dict(),
        }

    @classmethod
    def from_dict(cls, contact_id: str, data: dict[str, Any] | None) -> ContactRecord:
        if not data:
            return cls(ContactState(contact_id=contact_id))
        return cls(
            ContactState.from_dict(data["contact"]),
            Profile.from_dict(data.get("profile")),
            list(data.get("cookies") or ()),
            list(data.get("absorbed") or ()),
            offsets=dict(data.get("offsets") or {}),
            sources=dict(data.get("sources") or {}),
            inbox=list(data.get("inbox") or ()),
            applied=int(data.get("applied") or 0),
            # state written before trigger state had its own place kept it in the profile
            triggers=TriggerState.from_dict(data.get("triggers") or data.get("profile")),
        )

    def subject(self) -> Subject:
        contact = self.contact
        return Subject(
            contact_id=contact.contact_id,
            anonymous_id=None,
            email=contact.email,
            consent_email=contact.consent_email,
            email_blocked=contact.email_blocked,
            crm_status=contact.value("crm_status"),
            attributes=contact.plain_attributes(),
        )


def stamp(outs: list[Out], partition: int, offset: int) -> list[Out]:
    """Mark stage 1's ``contact-work`` records with where they came from in ``ma.events``.

    If stage 1 crashes after sending its outputs but before saving its state, it processes the
    same events again and sends the same records again. Stage 2 recognises them: per cookie
    (and source partition) it keeps the last ``[offset, index]`` applied.
    """
    stamped = []
    for index, out in enumerate(outs):
        if out.topic == CONTACT_WORK and out.value is not None:
            out = Out(out.topic, out.key, {**out.value, "src": [partition, offset, index]})
        stamped.append(out)
    return stamped


def _replayed(record: ContactRecord, message: dict[str, Any]) -> bool:
    src = message.get("src")
    if not src:
        return False
    partition, offset, index = src
    aid = message.get("aid") or (message.get("e") or {}).get("anonymous_id") or "-"
    source = f"{partition}:{aid}"
    last = record.sources.get(source)
    if last is not None and [offset, index] <= last:
        return True
    record.sources[source] = [offset, index]
    return False


def message_time(message: dict[str, Any]) -> int | None:
    """The event time of a stage-2 message (None: an old record without one)."""
    kind = message.get("k", "update")
    if kind == "event":
        return event_time(message["e"])
    if kind == "update":
        return event_time(message) if message.get("received_at") is not None else None
    at = message.get("at")
    return int(at) if at is not None else None


def contact_receive(
    record: ContactRecord,
    message: dict[str, Any],
    source: int,
    offset: int,
    counters: Counters | None = None,
) -> bool:
    """Stage 2 takes a message in: recognise a replay, else hold it in the contact's inbox
    until the frontier passes it (``contact_release``). False for a replay."""
    if _replayed(record, message):
        if counters is not None:
            counters.add("replayed")
        return False
    at = message_time(message)
    hold(record.inbox, order_key(message, -1 if at is None else at, source, offset), message)
    return True


def contact_release(
    record: ContactRecord, upto: int, rules: Rules, counters: Counters | None = None
) -> list[Out]:
    """Apply the contact's held records and fire its delayed triggers up to ``upto`` (the
    frontier), in event-time order. A contact erased on the way starts afresh with the rest."""
    counters = counters or Counters()
    outs: list[Out] = []
    while True:
        inbox = record.inbox
        first = inbox[0][0] if inbox else None
        due = None if record.erased else record.triggers.next_due()
        if due is not None and due <= upto and (first is None or due < first):
            outs += due_step(record, rules, due, counters)
            continue
        if first is None or (first > upto and len(inbox) <= INBOX_LIMIT):
            return outs
        if first > upto:
            counters.add("order_overflow")
        message = inbox.pop(0)[-1]
        if record.erased:  # forgotten: what follows is about a new person
            fresh = ContactRecord.from_dict(record.contact.contact_id, None)
            fresh.inbox, fresh.offsets, fresh.sources = inbox, record.offsets, record.sources
            record.__dict__.update(fresh.__dict__)
        if 0 <= first < record.applied:
            counters.add("late")
        record.applied = max(record.applied, first)
        outs += contact_step(record, message, rules, counters, dedup=False)


def contact_step(
    record: ContactRecord,
    message: dict[str, Any],
    rules: Rules,
    counters: Counters | None = None,
    *,
    dedup: bool = True,
) -> list[Out]:
    """Stage 2 for one ``contact-work`` message or ``ma.contact-updates`` value, applied now
    (``contact_receive`` and ``contact_release`` apply them in event-time order)."""
    counters = counters or Counters()
    if dedup and _replayed(record, message):
        counters.add("replayed")
        return []
    kind = message.get("k", "update")
    contact_id = record.contact.contact_id
    if kind == "event":
        return _contact_event(record, message["e"], rules, counters)
    if kind == "update" and message.get("op") == "forget":
        return _forget(record, message)
    if kind == "update":
        return _contact_update(record, message, rules, counters)
    if kind == "absorb":
        aid = message["aid"]
        if aid in record.absorbed:
            return []
        record.absorbed.append(aid)
        at = int(message["at"])
        before = record.profile.score_at(at, rules.scoring.half_life)
        delta = absorb(
            record.profile,
            Profile.from_dict(message["profile"]),
            rules.scoring,
            at,
            message.get("event_id"),
        )
        history = TriggerState.from_dict(message.get("triggers") or message["profile"])
        record.triggers.absorb(history)
        subject = record.subject()
        score = record.profile.score
        outcome = Outcome()
        outs = []
        if delta is not None:
            outcome = on_score(
                record.triggers, subject, before, score, rules.triggers, at,
                message.get("event_id"),
            )  # fmt: skip
            outs = _score_out([delta], contact_id, None, at)
        outcome.extend(on_history(record.triggers, history, subject, rules.triggers, at, score))
        return outs + _trigger_out(outcome, subject, counters, at, message.get("event_id"))
    if kind == "linked":
        return _track_cookie(record, message["aid"], int(message["at"]), rules, counters)
    if kind == "due":
        return due_step(record, rules, int(message["at"]), counters)
    if kind == "unlinked":
        record.cookies = [c for c in record.cookies if c[0] != message["aid"]]
        return []
    raise ValueError(f"unknown contact-work message kind {kind!r}")


def _forget(record: ContactRecord, request: dict[str, Any]) -> list[Out]:
    """Erase a contact: its state, its compacted record, its cookies' links, its rows.

    The contact's cookies are flagged (never linked again), ``ma.contacts`` gets a tombstone and
    the sink is told which rows to delete. Nothing of the request names the email.
    """
    contact_id = record.contact.contact_id
    cookies = sorted({c[0] for c in record.cookies} | set(record.absorbed))
    record.erased = True
    outs = [Out("contacts", contact_id, None)]
    outs += [
        Out(COOKIE_COMMANDS, aid, {"k": "forget", "contact_id": contact_id}) for aid in cookies
    ]
    outs.append(
        Out(
            CONTACT_WORK,
            contact_id,
            {
                "k": "erase",
                "contact_id": contact_id,
                "cookies": cookies,
                "erasure_id": request.get("erasure_id") or request.get("event_id"),
                "at": request.get("received_at"),
            },
        )
    )
    return outs


def _contact_event(
    record: ContactRecord, event: dict[str, Any], rules: Rules, counters: Counters
) -> list[Out]:
    contact_id = record.contact.contact_id
    at = event_time(event)
    if not record.profile.remember(str(event["event_id"])):
        counters.add("duplicates")
        return []
    outs: list[Out] = []
    kind = event.get("type")
    if kind == "unsubscribe":
        if set_consent(record.contact, False, "unsubscribe", at):
            outs.append(Out("contacts", contact_id, record.contact.published()))
    elif (
        kind == "email_bounce"
        and event.get("bounce_type") == "hard"
        and record.contact.email_blocked != "hard_bounce"
    ):
        record.contact.email_blocked = "hard_bounce"
        record.contact.updated_at = max(record.contact.updated_at, at)
        outs.append(Out("contacts", contact_id, record.contact.published()))
    if event.get("automated"):
        counters.add("automated")
        return outs
    profile = record.profile
    before = profile.score_at(at, rules.scoring.half_life)
    deltas = score_event(profile, event, rules.scoring, at)
    subject = record.subject()
    outcome = on_event(record.triggers, subject, event, rules.triggers, at, profile.score)
    if deltas:
        outcome.extend(
            on_score(
                record.triggers, subject, before, profile.score, rules.triggers, at,
                event["event_id"],
            )
        )  # fmt: skip
    return (
        outs
        + _score_out(deltas, contact_id, None, at)
        + _trigger_out(outcome, subject, counters, at, event["event_id"])
    )


def _contact_update(
    record: ContactRecord, update: dict[str, Any], rules: Rules, counters: Counters
) -> list[Out]:
    at = event_time(update)
    if not apply_update(record.contact, update, rules.merge, at):
        return []
    contact_id = record.contact.contact_id
    outs = [Out("contacts", contact_id, record.contact.published())]
    before = record.profile.score_at(at, rules.scoring.half_life)
    cause = update.get("event_id")  # the form submit whose traits these are; a CRM sync has none
    attributes = record.contact.plain_attributes()
    deltas = score_attributes(record.profile, attributes, rules.scoring, at, cause)
    if deltas:
        subject = record.subject()
        outcome = on_score(
            record.triggers, subject, before, record.profile.score, rules.triggers, at, cause
        )
        outs += _score_out(deltas, contact_id, None, at)
        outs += _trigger_out(outcome, subject, counters, at, cause)
    return outs


def _track_cookie(
    record: ContactRecord, aid: str, at: int, rules: Rules, counters: Counters
) -> list[Out]:
    """Keep at most ``max_cookies_per_contact`` cookies: the least recently linked one goes
    (counted as ``identity_evicted``, as a kiosk cookie's flag is ``identity_flag``)."""
    record.cookies = [c for c in record.cookies if c[0] != aid] + [[aid, at]]
    outs = []
    while len(record.cookies) > rules.identity.max_cookies_per_contact:
        evicted, _ = record.cookies.pop(0)
        counters.add("identity_evicted")
        contact_id = record.contact.contact_id
        outs.append(
            Out(
                "identities",
                evicted,
                {
                    "anonymous_id": evicted,
                    "contact_id": None,
                    "previous_contact_id": contact_id,
                    "reason": "contact_cookie_limit",
                    "event_id": None,
                    "at": from_millis(at),
                },
            )
        )
        outs.append(Out(COOKIE_COMMANDS, evicted, {"k": "unlink", "contact_id": contact_id}))
    return outs


def due_step(
    record: ContactRecord | CookieRecord,
    rules: Rules,
    now_ms: int,
    counters: Counters | None = None,
    anonymous_id: str | None = None,
) -> list[Out]:
    """Fire the record's delayed triggers that are due by ``now_ms``."""
    counters = counters or Counters()
    if isinstance(record, ContactRecord):
        subject = record.subject()
    else:
        subject = Subject(contact_id=None, anonymous_id=anonymous_id)
    outcome = fire_due(record.triggers, subject, rules.triggers, now_ms, record.profile.score)
    return _trigger_out(outcome, subject, counters, now_ms)


def cookie_command(
    record: CookieRecord,
    command: dict[str, Any],
    key: str,
    rules: Rules,
    counters: Counters | None = None,
) -> list[Out]:
    """Stage 1 for a ``cookie-commands`` message to the cookie (or user record) ``key``: from
    stage 2 (``unlink``, ``forget``), or between cookies and user records (``user``: whom a
    ``user_id`` names; ``whois``: a cookie asks; ``link``: the answer, evidence as an
    ``identify`` is)."""
    counters = counters or Counters()
    kind = command.get("k")
    cookie = record.cookie
    if kind == "unlink" and cookie.contact_id == command.get("contact_id"):
        cookie.contact_id = None
        cookie.linked_at = None
        cookie.user_id = None
    elif kind == "forget":
        # The person was erased: this cookie forgets them and is never linked again, so its
        # later events stay anonymous instead of re-attaching to anyone.
        record.cookie = Cookie(flagged=True, ever_linked=True)
        record.profile = Profile(seen=record.profile.seen)
        record.triggers = TriggerState()
    elif kind == "user":
        cookie.contact_id = command["contact_id"]
    elif kind == "whois" and cookie.contact_id is not None and not cookie.flagged:
        answer = {**command, "k": "link", "contact_id": cookie.contact_id}
        return [Out(COOKIE_COMMANDS, command["aid"], answer)]
    elif kind == "link":
        at = int(command["at"])
        claimed = command["contact_id"]
        decision = decide_identity(cookie, {"type": "user_id"}, rules.identity, at, claimed)
        if decision.cookie_contact_id == claimed:
            cookie.user_id = command["user_id"]
        return _identity_outs(record, decision, key, str(command["event_id"]), at, counters)
    return []
