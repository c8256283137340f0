"""Turning what clients post into accepted ``ma.events`` values, or into messages a person can act
on ("events[3].url: required for page_view").

Example::

    result = validate_events(raw_events, site_id="acme", trusted=False, received_at=now)
    result.accepted   # list of normalised event dicts (the ma.events value)
    result.rejected   # list of Rejection(index, error, payload)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from pipeline.identity import email_rejection, is_garbage_identifier, normalize_email
from pipeline.models.events import BROWSER_TYPES, SERVER_TYPES, InboundEvent


@dataclass(frozen=True)
class Rejection:
    index: int
    error: str
    payload: Any


@dataclass
class BatchResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def describe_validation_error(exc: ValidationError, prefix: str) -> str:
    """pydantic errors as ``events[3].ts: …`` lines joined by ``; ``."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "literal_error" and error["loc"] == ("type",):
            message = f"unknown event type {error['input']!r}; {message.lower()}"
        parts.append(f"{prefix}{loc}: {message}")
    return "; ".join(parts)


def validate_events(
    raw_events: list[Any],
    *,
    site_id: str,
    trusted: bool,
    received_at: datetime,
    user_agent: str | None = None,
) -> BatchResult:
    """Validate and normalise each event; a bad one is rejected alone, never the whole batch.

    ``trusted`` is True for a server key: server-only types and ``contact_id`` are allowed and
    ``anonymous_id`` is optional.
    """
    result = BatchResult()
    allowed = SERVER_TYPES if trusted else BROWSER_TYPES
    for index, raw in enumerate(raw_events):
        prefix = f"events[{index}]"
        if not isinstance(raw, dict):
            result.rejected.append(Rejection(index, f"{prefix}: expected a JSON object", raw))
            continue
        try:
            event = InboundEvent.model_validate(raw)
        except ValidationError as exc:
            result.rejected.append(Rejection(index, describe_validation_error(exc, prefix), raw))
            continue
        problems = [f"{prefix}.{name}: {message}" for name, message in event.missing_fields()]
        if event.type not in allowed:
            who = "a server key" if event.type in SERVER_TYPES else "the collector itself"
            problems.append(f"{prefix}.type: {event.type!r} may only be sent by {who}")
        if not trusted:
            if event.contact_id is not None:
                problems.append(f"{prefix}.contact_id: only accepted with a server key")
            if event.anonymous_id is None:
                problems.append(f"{prefix}.anonymous_id: required from browsers (write key)")
        elif event.anonymous_id is None and event.contact_id is None and event.email is None:
            problems.append(f"{prefix}: give anonymous_id, contact_id or email")
        if event.url is not None and not _is_http_url(event.url):
            problems.append(f"{prefix}.url: expected an absolute http(s) URL")
        if problems:
            result.rejected.append(Rejection(index, "; ".join(problems), raw))
            continue
        result.accepted.append(normalise(event, site_id, received_at, trusted, user_agent))
    return result


def normalise(
    event: InboundEvent,
    site_id: str,
    received_at: datetime,
    trusted: bool,
    user_agent: str | None,
) -> dict[str, Any]:
    """The ``ma.events`` value of a valid inbound event (see ``pipeline.models.Event``)."""
    notes = []
    anonymous_id = event.anonymous_id
    if anonymous_id is not None and is_garbage_identifier(anonymous_id):
        notes.append(f"anonymous_id {anonymous_id!r} ignored: placeholder value")
        anonymous_id = None
    email = normalize_email(event.email) if event.email is not None else None
    if email is not None:
        rejection = email_rejection(email)
        if rejection:
            notes.append(f"email not used for identity: {rejection}")
    value: dict[str, Any] = {
        "event_id": str(event.event_id or uuid.uuid4()),
        "type": event.type,
        "site_id": site_id,
        "received_at": received_at,
        "source": "server" if trusted else "browser",
    }
    optional = {
        "client_ts": event.ts,
        "anonymous_id": anonymous_id,
        "contact_id": str(event.contact_id) if event.contact_id else None,
        "email": email,
        "url": event.url,
        "path": _path(event.url) if event.url else None,
        "referrer": event.referrer,
        "title": event.title,
        "name": event.name,
        "form_id": event.form_id,
        "campaign_id": event.campaign_id,
        "bounce_type": event.bounce_type,
        "user_agent": user_agent[:512] if user_agent and not trusted else None,
        "link_note": "; ".join(notes) or None,
    }
    value.update({k: v for k, v in optional.items() if v is not None})
    if event.properties:
        value["properties"] = event.properties
    if event.traits:
        value["traits"] = event.traits
    return value


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _path(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"
