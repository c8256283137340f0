"""Turning what clients post into accepted ``ma.events`` values, or into messages a person can act
on ("events[3].url: required for page_view").

Example::

    result = validate_events(raw_events, site_id="acme", trusted=False, received_at=now)
    result.accepted   # list of normalised event dicts (the ma.events value)
    result.rejected   # list of Rejection(index, error, payload)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from pipeline.collect.fast_path import inbound_fields
from pipeline.identity import email_rejection, is_garbage_identifier, new_id, normalize_email
from pipeline.models.events import BROWSER_TYPES, SERVER_TYPES, InboundEvent, missing_fields


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
    source = "server" if trusted else "browser"
    agent = user_agent[:512] if user_agent and not trusted else None
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            error = f"events[{index}]: expected a JSON object"
            result.rejected.append(Rejection(index, error, raw))
            continue
        # The plain shape is checked by hand; anything else (and every error) by the model.
        fields = inbound_fields(raw)
        if fields is None:
            try:
                fields = InboundEvent.model_validate(raw).__dict__
            except ValidationError as exc:
                error = describe_validation_error(exc, f"events[{index}]")
                result.rejected.append(Rejection(index, error, raw))
                continue
        url = fields["url"]
        path = _http_path(url) if url is not None else None
        problems = _problems(fields, trusted, allowed, url_ok=url is None or path is not None)
        if problems:
            prefix = f"events[{index}]"
            error = "; ".join(f"{prefix}{problem}" for problem in problems)
            result.rejected.append(Rejection(index, error, raw))
            continue
        result.accepted.append(normalise(fields, site_id, received_at, source, agent, path))
    return result


def _problems(
    fields: dict[str, Any], trusted: bool, allowed: frozenset[str], url_ok: bool
) -> list[str]:
    """What is wrong with a well-typed event for this key, each as ``.field: message``."""
    kind = fields["type"]
    missing = missing_fields(kind, fields)
    problems = [f".{name}: {message}" for name, message in missing] if missing else []
    if kind not in allowed:
        who = "a server key" if kind in SERVER_TYPES else "the collector itself"
        problems.append(f".type: {kind!r} may only be sent by {who}")
    if not trusted:
        if fields["contact_id"] is not None:
            problems.append(".contact_id: only accepted with a server key")
        if fields["anonymous_id"] is None:
            problems.append(".anonymous_id: required from browsers (write key)")
    elif (
        fields["anonymous_id"] is None and fields["contact_id"] is None and fields["email"] is None
    ):
        problems.append(": give anonymous_id, contact_id or email")
    if not url_ok:
        problems.append(".url: expected an absolute http(s) URL")
    return problems


def normalise(
    fields: dict[str, Any],
    site_id: str,
    received_at: datetime,
    source: str,
    user_agent: str | None,
    path: str | None,
) -> dict[str, Any]:
    """The ``ma.events`` value of a valid inbound event (see ``pipeline.models.Event``).

    ``fields`` are the event's validated fields (``InboundEvent``'s, UUIDs as objects or text),
    ``user_agent`` the request's as kept (browsers only, at most 512 characters), ``path`` the
    path of ``fields["url"]``. Keys come in a fixed order, absent values are left out.
    """
    notes = []
    anonymous_id = fields["anonymous_id"]
    if anonymous_id is not None and is_garbage_identifier(anonymous_id):
        notes.append(f"anonymous_id {anonymous_id!r} ignored: placeholder value")
        anonymous_id = None
    email = fields["email"]
    if email is not None:
        email = normalize_email(email)
        rejection = email_rejection(email)
        if rejection:
            notes.append(f"email not used for identity: {rejection}")
    event_id = fields["event_id"]
    value: dict[str, Any] = {
        "event_id": str(event_id) if event_id is not None else new_id(),
        "type": fields["type"],
        "site_id": site_id,
        "received_at": received_at,
        "source": source,
    }
    # Spelled out field by field (no loop over pairs): this runs for every accepted event.
    if fields["ts"] is not None:
        value["client_ts"] = fields["ts"]
    if anonymous_id is not None:
        value["anonymous_id"] = anonymous_id
    if fields["contact_id"] is not None:
        value["contact_id"] = str(fields["contact_id"])
    if email is not None:
        value["email"] = email
    if fields["url"] is not None:
        value["url"] = fields["url"]
    if path is not None:
        value["path"] = path
    if fields["referrer"] is not None:
        value["referrer"] = fields["referrer"]
    if fields["title"] is not None:
        value["title"] = fields["title"]
    if fields["name"] is not None:
        value["name"] = fields["name"]
    if fields["form_id"] is not None:
        value["form_id"] = fields["form_id"]
    if fields["campaign_id"] is not None:
        value["campaign_id"] = fields["campaign_id"]
    if fields["bounce_type"] is not None:
        value["bounce_type"] = fields["bounce_type"]
    if user_agent is not None:
        value["user_agent"] = user_agent
    if notes:
        value["link_note"] = "; ".join(notes)
    if fields["properties"]:
        value["properties"] = fields["properties"]
    if fields["traits"]:
        value["traits"] = fields["traits"]
    return value


def _is_http_url(url: str) -> bool:
    return _http_path(url) is not None


def _path(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"


# An absolute http(s) URL that ``urlsplit`` would split at the obvious places: no tab or line
# break (it deletes those), an ASCII host without brackets (IPv6 and IDNA checks).
_PLAIN_HTTP_URL = re.compile(
    r"https?://[^/?#\[\]\t\r\n\x80-\U0010ffff]+"  # scheme and host
    r"(/[^?#\t\r\n]*)?"  # the path
    r"(?:[?#][^\t\r\n]*)?"  # query and fragment
)


def _http_path(url: str) -> str | None:
    """The path of an absolute http(s) URL (``/`` when empty), or ``None`` for any other text.

    Plain URLs are split by one regular expression; anything else goes through ``urlsplit``.
    """
    match = _PLAIN_HTTP_URL.fullmatch(url)
    if match is not None:
        return match.group(1) or "/"
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme in ("http", "https") and parts.netloc:
        return parts.path or "/"
    return None
