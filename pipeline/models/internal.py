"""The messages between the worker's stages, on the internal ``x.*`` topics (not a public
contract: they change with the worker; JSON Schemas in ``schemas/json/x.*.schema.json``).

- ``x.contact-work`` (stage 1 → stage 2, keyed by contact): what stage 2 applies in event-time
  order, a batch's in one envelope per partition (``HandOvers``), and stage 1's watermarks
  (``pipeline.worker.order``).
- ``x.cookie-commands`` (stage 2 → stage 1, keyed by cookie; and between a cookie and the
  user record of a ``user_id``, both in stage 1).
- ``x.anonymous-events`` (stage 1 → the sink): events without a contact.

Stage 1 stamps each ``x.contact-work`` record with ``src``: ``[ma.events partition, offset,
index of the record among that event's outputs]``, by which stage 2 recognises a replay.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from pipeline.models.contacts import ContactUpdate
from pipeline.models.types import UtcDatetime

Src = Annotated[
    list[int],
    Field(
        min_length=3,
        max_length=3,
        description="[ma.events partition, offset, index among that event's records]",
    ),
]
Millis = Annotated[int, Field(description="epoch milliseconds")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventHandOver(_Message):
    """An event resolved to its contact (or, on ``x.anonymous-events``, to none)."""

    k: Literal["event"]
    e: dict[str, object] = Field(
        description="the ma.events value (events.schema.json) with contact_id and "
        "pre_identification set"
    )
    src: Src | None = None


class Linked(_Message):
    """The cookie ``aid`` is now the contact's (a link or a re-link)."""

    k: Literal["linked"]
    aid: str
    at: Millis
    src: Src | None = None


class Unlinked(_Message):
    """The cookie ``aid`` left this contact for another (a re-link)."""

    k: Literal["unlinked"]
    aid: str
    at: Millis | None = None
    src: Src | None = None


class Absorb(_Message):
    """The cookie's first link: its anonymous score and trigger state join the contact."""

    k: Literal["absorb"]
    aid: str
    at: Millis
    event_id: str | None = None
    profile: dict[str, object] = Field(description="the cookie's score profile")
    triggers: dict[str, object] | None = Field(
        default=None, description="the cookie's trigger state (pipeline/trigger/state.py)"
    )
    src: Src | None = None


class UpdateHandOver(ContactUpdate):
    """A form's or identify's traits, applied by stage 2 in order with the contact's events."""

    model_config = ConfigDict(extra="forbid")
    k: Literal["update"]
    src: Src | None = None


class Erase(_Message):
    """``forget``: the sink deletes the contact's rows."""

    k: Literal["erase"]
    contact_id: str
    cookies: list[str]
    erasure_id: str | None = None
    at: object = None


class Watermark(_Message):
    """How far stage 1 has got on each ``ma.events`` partition it owns, for this
    ``x.contact-work`` partition (``pipeline.worker.order``)."""

    k: Literal["wm"]
    w: dict[str, Millis] = Field(description='"e<partition>" → received_at reached')
    idle: list[str] = Field(
        default_factory=list,
        description="partitions read to the end: counted as now - MA_ORDER_WAIT until a "
        "later watermark says otherwise",
    )


HandOver = Annotated[
    EventHandOver | Linked | Unlinked | Absorb | UpdateHandOver, Field(discriminator="k")
]


class HandOvers(_Message):
    """A batch's hand-overs to one partition (``pipeline.worker.handover``), in the order
    stage 1 decided them: each ``[contact_id, message]`` as a record of its own would be."""

    k: Literal["batch"]
    m: list[tuple[str, HandOver]] = Field(description="[contact_id, message] pairs")


class ContactWork(RootModel[object]):
    root: Annotated[
        EventHandOver | Linked | Unlinked | Absorb | UpdateHandOver | HandOvers | Erase | Watermark,
        Field(discriminator="k"),
    ]


class Unlink(_Message):
    """Stage 2 let the cookie go (its contact's cookie limit): unlink it from ``contact_id``."""

    k: Literal["unlink"]
    contact_id: str


class Forget(_Message):
    """The person was erased: the cookie is never linked again."""

    k: Literal["forget"]
    contact_id: str


class User(_Message):
    """To a user record (key ``user:<site>:<user_id>``): an identify with an email said whom
    this ``user_id`` names."""

    k: Literal["user"]
    contact_id: str
    at: Millis


class Whois(_Message):
    """To a user record: the cookie ``aid`` sent a call with this ``user_id`` and no email."""

    k: Literal["whois"]
    aid: str
    user_id: str
    at: Millis
    event_id: str


class Link(_Message):
    """To a cookie, from a user record: its ``user_id`` names ``contact_id``; evidence as an
    identify is (reason ``user_id``)."""

    k: Literal["link"]
    aid: str
    user_id: str
    contact_id: str
    at: Millis
    event_id: str


class CookieCommand(RootModel[object]):
    root: Annotated[Unlink | Forget | User | Whois | Link, Field(discriminator="k")]


class AnonymousEvent(RootModel[object]):
    root: EventHandOver


class TriggerDecision(_Message):
    """``ma.x.decisions``: a trigger rule that did not fire for a subject, and why, or that was
    scheduled to fire later (a delay), and when (both stages → the sink's
    ``trigger_decisions``; the console's "suppressed by …", "scheduled for …")."""

    contact_id: str | None
    anonymous_id: str | None
    at: UtcDatetime
    rule: str
    decision: Literal["skipped", "scheduled"]
    reason: str = Field(
        description="skipped: e.g. suppressed:customer, no_consent, once_per, cancel_if; "
        "scheduled: due_at:<ISO time>"
    )
    event_id: str | None = Field(description="the event it was decided on; none at a due time")
