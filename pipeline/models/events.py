"""Events: what clients post (``InboundEvent`` in a ``BatchRequest``), what flows on ``ma.events``.

Example::

    InboundEvent.model_validate({"type": "page_view", "anonymous_id": aid, "url": "https://a.io/pricing"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pipeline.identity import user_key
from pipeline.models.types import (
    EmailText,
    Identifier,
    Properties,
    ShortText,
    Text,
    UrlText,
    UtcDatetime,
)

EventType = Literal[
    "page_view",
    "custom",
    "form_submit",
    "identify",
    "email_click",
    "email_open",
    "unsubscribe",
    "email_sent",
    "email_bounce",
    "group",
    "alias",
]
#: Types a browser (write key) may send.
BROWSER_TYPES = frozenset({"page_view", "custom", "form_submit", "identify"})
#: Types a backend (server key) may send.
SERVER_TYPES = BROWSER_TYPES | {"email_sent", "email_bounce"}
#: Types only the collector itself makes (from signed links).
COLLECTOR_TYPES = frozenset({"email_click", "email_open", "unsubscribe"})
#: Types only the Segment-compatible API makes (``pipeline.collect.segment_api``): a ``group``
#: call (its ``traits`` become the caller's contact attributes) and an ``alias`` call (kept as
#: an event, never merges contacts).
SEGMENT_TYPES = frozenset({"group", "alias"})

MAX_BATCH_EVENTS = 100
MAX_BATCH_BYTES = 512 * 1024

Source = Literal["browser", "server", "pixel", "email"]


# ``pipeline.collect.fast_path`` checks the common shape of these by hand (the collector's hot
# path): a change here needs the same change there; ``tests/unit/collect/test_fast_path.py``
# fails until both agree.
class InboundEvent(BaseModel):
    """One event of a ``POST /v1/batch`` body, before normalisation."""

    model_config = ConfigDict(extra="ignore", str_max_length=4096)

    event_id: UUID | None = None
    type: EventType
    anonymous_id: Identifier | None = None
    user_id: Identifier | None = None
    ts: UtcDatetime | None = None
    url: UrlText | None = None
    referrer: UrlText | None = None
    title: Text | None = None
    name: ShortText | None = None
    properties: Properties
    email: EmailText | None = None
    traits: Properties
    form_id: ShortText | None = None
    contact_id: UUID | None = None
    campaign_id: ShortText | None = None
    bounce_type: Literal["hard", "soft"] | None = None

    def missing_fields(self) -> list[tuple[str, str]]:
        """Fields this event's type requires but lacks, as ``(field, message)`` pairs."""
        return missing_fields(self.type, self.__dict__)


def missing_fields(event_type: str, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The fields ``event_type`` requires that ``values`` (an inbound event's validated fields)
    lacks, as ``(field, message)`` pairs."""
    return [
        (field, f"required for {event_type}")
        for field in _REQUIRED.get(event_type, ())
        if values[field] in (None, "")
    ]


_REQUIRED: dict[str, tuple[str, ...]] = {
    "page_view": ("url",),
    "custom": ("name",),
    "form_submit": ("email",),
    "identify": ("email",),
    "email_sent": ("contact_id",),
    "email_bounce": ("contact_id",),
}


class BatchRequest(BaseModel):
    """The envelope of ``POST /v1/batch``; events are validated one by one afterwards."""

    model_config = ConfigDict(extra="ignore")

    site_id: ShortText
    write_key: ShortText | None = None
    events: list[object] = Field(max_length=MAX_BATCH_EVENTS)


class Event(BaseModel):
    """An accepted event, validated and normalised: the value of ``ma.events``.

    ``received_at`` (server time, UTC) is the event time for windows, delays and ordering; the
    client's ``ts`` is kept as ``client_ts``. ``email`` is normalised; ``path`` is ``url``'s path.
    """

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(description="UUID text; the same event_id twice is one event")
    type: EventType
    site_id: str
    received_at: UtcDatetime
    client_ts: UtcDatetime | None = None
    source: Source
    anonymous_id: str | None = Field(
        default=None, description="the ma_aid cookie; absent when missing or a placeholder value"
    )
    contact_id: str | None = Field(
        default=None, description="from a server key, or from a signed email token"
    )
    user_id: str | None = Field(
        default=None,
        description="the site's own id of the person (Segment's userId): recorded as the "
        "contact attribute user_id by an identify with an email; later calls with only a known "
        "user_id are that contact's",
    )
    email: str | None = Field(default=None, description="normalised (NFKC, trimmed, lower-case)")
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None
    name: str | None = None
    properties: dict[str, object] = Field(default_factory=dict)
    traits: dict[str, object] = Field(default_factory=dict)
    form_id: str | None = None
    campaign_id: str | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    automated: bool = Field(default=False, description="judged a scanner or bot; never links")
    automated_reason: str | None = None
    user_agent: str | None = None
    link_note: str | None = Field(
        default=None, description="why this event may not link a cookie, e.g. a placeholder email"
    )

    def key(self) -> str:
        """The topic key: ``anonymous_id``, else ``contact_id``, else the ``user_id``'s key
        (``pipeline.identity.user_key``), else ``event_id``."""
        if self.anonymous_id or self.contact_id:
            return self.anonymous_id or self.contact_id or ""
        if self.user_id:
            return user_key(self.site_id, self.user_id)
        return self.event_id
