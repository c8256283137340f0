"""Run the worker's real stages over a list of events, without a broker: test a rules file.

``Pipeline`` routes the records of ``pipeline.worker.steps`` between stage 1 (per cookie) and
stage 2 (per contact) as the worker does, in event-time order (what the worker promises,
CONTRACT §3 "Order"), with every value and every piece of state passing through the JSON
codec. What reaches a public topic is in ``published``.

Example (a test of your own rules file)::

    from pipeline.testing import Pipeline, event

    aid = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"
    pipeline = Pipeline.from_file("config/rules.yaml")
    pipeline.run([
        event("page_view", "2026-03-02T09:00:00Z", anonymous_id=aid,
              url="https://www.acme.example/pricing", path="/pricing"),
        event("form_submit", "2026-03-02T09:05:00Z", anonymous_id=aid, email="ana@acme.io",
              form_id="newsletter", traits={"consent_email": "on"}),
    ])
    pipeline.tick("2026-03-03T09:05:00Z")          # a day later: delayed triggers fire
    [t["rule"] for t in pipeline.of("triggers")]   # ['pricing-trial-offer']
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import codec
from pipeline.clock import to_millis
from pipeline.identity import is_user_key
from pipeline.rules import Rules, load_rules
from pipeline.topics import CONTACT_WORK, COOKIE_COMMANDS
from pipeline.worker.steps import (
    ContactRecord,
    CookieRecord,
    Counters,
    Out,
    contact_receive,
    contact_release,
    cookie_command,
    cookie_step,
    due_step,
    event_time,
    state_key,
    user_step,
)

__all__ = ["Pipeline", "event"]


def roundtrip(value: Any) -> Any:
    return codec.loads(codec.dumps(value))


def event(kind: str, at: str | datetime, **fields: Any) -> dict[str, Any]:
    """An ``ma.events`` value as the collector writes it: ``type``, ``received_at`` (ISO text
    or a datetime), a fresh ``event_id`` unless given, and ``fields``."""
    received = at if isinstance(at, datetime) else datetime.fromisoformat(at.replace("Z", "+00:00"))
    return {"event_id": str(uuid.uuid4()), "type": kind, "received_at": received, **fields}


@dataclass
class Pipeline:
    """Both stages with their tables; ``published`` holds what reached public topics, in order."""

    rules: Rules
    cookies: dict[str, Any] = field(default_factory=dict)
    contacts: dict[str, Any] = field(default_factory=dict)
    published: list[Out] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def from_file(cls, path: str | Path) -> Pipeline:
        return cls(load_rules(Path(path)))

    def run(self, events: Iterable[dict[str, Any]]) -> list[Out]:
        """``events`` in event-time order (``received_at``, then ``event_id``), as the worker
        applies them whatever order they arrive in."""
        outs: list[Out] = []
        for value in sorted(events, key=lambda e: (event_time(e), str(e["event_id"]))):
            outs += self.send(value)
        return outs

    def send(self, event: dict[str, Any]) -> list[Out]:
        """One ``ma.events`` value through stage 1 and everything it causes downstream."""
        value = roundtrip(event)
        aid = state_key(value)
        record = CookieRecord.from_dict(self.cookies.get(aid)) if aid else CookieRecord()
        if aid and is_user_key(aid):
            outs = user_step(record, value, aid, self.counters)
        else:
            outs = cookie_step(record, value, self.rules, self.counters)
        if aid:
            self.cookies[aid] = roundtrip(record.to_dict())
        return self._route(outs)

    def contact_update(self, update: dict[str, Any]) -> list[Out]:
        """One ``ma.contact-updates`` value (e.g. from ``POST /v1/contacts``)."""
        return self._contact(update["contact_id"], {"k": "update", **roundtrip(update)})

    def tick(self, now: int | str | datetime) -> list[Out]:
        """Time passes until ``now`` (epoch ms, ISO text or datetime): delayed triggers due by
        then fire, each at its due time."""
        if isinstance(now, str):
            now = datetime.fromisoformat(now.replace("Z", "+00:00"))
        now_ms = to_millis(now) if isinstance(now, datetime) else now
        outs: list[Out] = []
        for key, data in sorted(self.contacts.items()):
            record = ContactRecord.from_dict(key, data)
            outs += contact_release(record, now_ms, self.rules, self.counters)
            self.contacts[key] = roundtrip(record.to_dict())
        for key, data in sorted(self.cookies.items()):
            cookie = CookieRecord.from_dict(data)
            while (due := cookie.triggers.next_due()) is not None and due <= now_ms:
                outs += due_step(cookie, self.rules, due, self.counters, anonymous_id=key)
            self.cookies[key] = roundtrip(cookie.to_dict())
        return self._route(outs)

    def contact(self, contact_id: str) -> ContactRecord:
        return ContactRecord.from_dict(contact_id, self.contacts.get(contact_id))

    def cookie(self, anonymous_id: str) -> CookieRecord:
        return CookieRecord.from_dict(self.cookies.get(anonymous_id))

    def of(self, topic: str) -> list[dict[str, Any]]:
        """The values published on a public topic (``triggers``, ``scores``, ``identities``,
        ``contacts``, ``contact-updates``), in order."""
        return [o.value for o in self.published if o.topic == topic and o.value is not None]

    # -- routing --------------------------------------------------------------------------------
    def _route(self, outs: list[Out]) -> list[Out]:
        everything: list[Out] = []
        for out in outs:
            out = Out(out.topic, out.key, roundtrip(out.value))
            everything.append(out)
            if out.topic == CONTACT_WORK:
                assert out.value is not None and out.key is not None
                if out.value.get("k") != "erase":  # for the sink
                    everything += self._contact(out.key, out.value)
            elif out.topic == COOKIE_COMMANDS:
                assert out.key is not None and out.value is not None
                cookie = CookieRecord.from_dict(self.cookies.get(out.key))
                caused = cookie_command(cookie, out.value, out.key, self.rules, self.counters)
                self.cookies[out.key] = roundtrip(cookie.to_dict())
                everything += self._route(caused)
            elif out.topic == "contact-updates":
                assert out.value is not None
                self.published.append(out)
                if out.value.get("via") != "worker":  # a form's: applied from the hand-over
                    everything += self._contact(
                        out.value["contact_id"], {"k": "update", **out.value}
                    )
            else:
                self.published.append(out)
        return everything

    def _contact(self, key: str, message: dict[str, Any]) -> list[Out]:
        """Stage 2 takes a message in and applies it at once: messages come in event-time
        order here, so the frontier is the message's own time."""
        record = ContactRecord.from_dict(key, self.contacts.get(key))
        outs: list[Out] = []
        if contact_receive(record, message, 0, 0, self.counters):
            upto = record.inbox[-1][0] if record.inbox else 0
            outs = contact_release(record, max(upto, record.applied), self.rules, self.counters)
        self.contacts[key] = roundtrip(record.to_dict())
        return self._route(outs)
