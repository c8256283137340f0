"""The collector's HTTP answers, and the Segment-shaped bodies it takes: the shapes the OpenAPI
document (``pipeline.collect.openapi``, ``GET /openapi.json``) names.

The handlers build their answers as plain dicts on the hot path; these models describe them
(the OpenAPI test checks every answer the fuzz suite gets against them), they do not build them.
Request bodies are the models the handlers validate with (``BatchRequest``, ``InboundEvent``,
``ContactsRequest``, ``ContactUpsert``), except Segment's calls, which the collector maps by
hand (``pipeline.collect.segment_api``) and which are described here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models.events import MAX_BATCH_EVENTS


class Rejection(BaseModel):
    """One item of a body that was not accepted (and was dead-lettered)."""

    index: int = Field(description="its position in the body's array")
    error: str = Field(description="what is wrong, e.g. 'events[3].url: required for page_view'")


class BatchAnswer(BaseModel):
    """``200`` of ``POST /v1/batch`` (our envelope) and ``POST /v1/contacts``: every item is
    either accepted (durably in Kafka) or listed here."""

    accepted: int
    rejected: list[Rejection]


class ErrorAnswer(BaseModel):
    """Any refusal of our own endpoints. A request sent with HTTP Basic auth (Segment's SDKs)
    also gets Segment's ``code`` and ``message``."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="one sentence a person can act on")
    code: str | None = None
    message: str | None = None


class SegmentSuccess(BaseModel):
    """``200`` of Segment's calls: the SDKs do not retry it."""

    success: Literal[True]


class SegmentRefusal(BaseModel):
    """A refusal of Segment's calls, in the shape its SDKs read."""

    code: str
    message: str
    error: str | None = None


class SegmentCall(BaseModel):
    """One call of Segment's HTTP tracking spec (``/v1/track``, ``/v1/identify``, … or an item
    of ``batch``); what the collector reads of it. Other fields are ignored."""

    model_config = ConfigDict(extra="allow")

    type: Literal["track", "identify", "page", "screen", "group", "alias"] | None = Field(
        None, description="required in a batch item; the path names it for a single call"
    )
    anonymousId: str | None = None  # Segment's field names
    userId: str | None = None
    messageId: str | None = Field(None, description="becomes event_id: an SDK's retry keeps it")
    event: str | None = Field(None, description="track: the event's name")
    name: str | None = Field(None, description="page, screen: the page's or screen's name")
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = Field(None, description="identify: email and traits")
    context: dict[str, Any] | None = Field(None, description="page.url, userAgent, ip, …")
    timestamp: str | None = None
    writeKey: str | None = None


class SegmentBatch(BaseModel):
    """Segment's envelope (``POST /v1/batch``, told apart from ours by its ``batch`` array,
    and analytics.js's ``POST /v1/b``)."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentCall] = Field(max_length=MAX_BATCH_EVENTS)
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    writeKey: str | None = None


class WebTrigger(BaseModel):
    rule: str
    trigger_id: str
    active_until: str = Field(description="ISO-8601 time, UTC")


class Profile(BaseModel):
    """``200`` of ``GET /v1/profile``: no PII."""

    anonymous_id: str
    identified: bool
    segments: list[str]
    web_triggers: list[WebTrigger]


class SegmentInfo(BaseModel):
    name: str
    description: str
    kind: Literal["rules", "sql"]


class SegmentList(BaseModel):
    segments: list[SegmentInfo]


class SegmentCount(BaseModel):
    segment: str
    count: int


class Health(BaseModel):
    status: str
    broker: str | None = None
