"""An in-memory stand-in for the worker's agents: routes ``Out`` records between the two stages
the way ``pipeline.worker.app`` does, with every value and every piece of state passing through
the JSON codec, so the steps are tested end to end without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import codec
from pipeline.rules import Rules
from pipeline.worker.steps import (
    CONTACT_WORK,
    COOKIE_COMMANDS,
    ContactRecord,
    CookieRecord,
    Counters,
    Out,
    contact_step,
    cookie_command,
    cookie_step,
    due_step,
)


def roundtrip(value: Any) -> Any:
    return codec.loads(codec.dumps(value))


@dataclass
class Pipeline:
    """Both stages with their tables; ``published`` holds what reached public topics, in order."""

    rules: Rules
    cookies: dict[str, Any] = field(default_factory=dict)
    contacts: dict[str, Any] = field(default_factory=dict)
    published: list[Out] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)

    def send(self, event: dict[str, Any]) -> list[Out]:
        """One ``ma.events`` value through stage 1 and everything it causes downstream."""
        value = roundtrip(event)
        aid = value.get("anonymous_id")
        record = CookieRecord.from_dict(self.cookies.get(aid)) if aid else CookieRecord()
        outs = cookie_step(record, value, self.rules, self.counters)
        if aid:
            self.cookies[aid] = roundtrip(record.to_dict())
        return self._route(outs)

    def contact_update(self, update: dict[str, Any]) -> list[Out]:
        """One ``ma.contact-updates`` value (e.g. from ``POST /v1/contacts``)."""
        return self._contact(update["contact_id"], {"k": "update", **roundtrip(update)})

    def tick(self, now_ms: int) -> list[Out]:
        """The due-trigger timer at ``now_ms``."""
        outs: list[Out] = []
        for key, data in sorted(self.contacts.items()):
            record = ContactRecord.from_dict(key, data)
            outs += due_step(record, self.rules, now_ms, self.counters)
            self.contacts[key] = roundtrip(record.to_dict())
        for key, data in sorted(self.cookies.items()):
            cookie = CookieRecord.from_dict(data)
            outs += due_step(cookie, self.rules, now_ms, self.counters, anonymous_id=key)
            self.cookies[key] = roundtrip(cookie.to_dict())
        return self._route(outs)

    def contact(self, contact_id: str) -> ContactRecord:
        return ContactRecord.from_dict(contact_id, self.contacts.get(contact_id))

    def cookie(self, anonymous_id: str) -> CookieRecord:
        return CookieRecord.from_dict(self.cookies.get(anonymous_id))

    def of(self, topic: str) -> list[dict[str, Any]]:
        return [o.value for o in self.published if o.topic == topic and o.value is not None]

    # -- routing --------------------------------------------------------------------------------
    def _route(self, outs: list[Out]) -> list[Out]:
        everything: list[Out] = []
        for out in outs:
            out = Out(out.topic, out.key, roundtrip(out.value))
            everything.append(out)
            if out.topic == CONTACT_WORK:
                assert out.value is not None
                assert out.key is not None
                everything += self._contact(out.key, out.value)
            elif out.topic == COOKIE_COMMANDS:
                assert out.key is not None and out.value is not None
                cookie = CookieRecord.from_dict(self.cookies.get(out.key))
                cookie_command(cookie, out.value)
                self.cookies[out.key] = roundtrip(cookie.to_dict())
            elif out.topic == "contact-updates":
                assert out.value is not None
                self.published.append(out)
                everything += self._contact(out.value["contact_id"], {"k": "update", **out.value})
            else:
                self.published.append(out)
        return everything

    def _contact(self, key: str, message: dict[str, Any]) -> list[Out]:
        record = ContactRecord.from_dict(key, self.contacts.get(key))
        outs = contact_step(record, message, self.rules, self.counters)
        self.contacts[key] = roundtrip(record.to_dict())
        return self._route(outs)
