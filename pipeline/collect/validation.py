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
from pipeline.errors import validation_message
from pipeline.identity import email_rejection, is_garbage_identifier, new_id, normalize_email
from pipeline.models.events import (
    BROWSER_TYPES,
    SEGMENT_TYPES,
    SERVER_TYPES,
    InboundEvent,
    missing_fields,
)

#: The scheme of a Segment ``screen``'s URL: ``app://<screen name>``.
APP_URL = "app://"


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
        message = validation_message(error)
        if error["type"] == "literal_error" and error["loc"] == ("type",):
            message = f"unknown event type {error['input']!r}; {message.lower()}"
        parts.append(f"{prefix}{loc}: {message}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Dialect:
    """What one HTTP API accepts of the event model: our own ``/v1/batch`` (``OURS``) or
    Segment's tracking spec once translated (``SEGMENT``, ``pipeline.collect.segment_api``)."""

    browser_types: frozenset[str]
    server_types: frozenset[str]
    #: A browser's event may name its person by ``user_id`` instead of ``anonymous_id``.
    user_id_identifies: bool = False
    #: An ``identify`` without an email is kept (Segment's identify of traits or a userId).
    identify_without_email: bool = False
    #: ``app://<screen>`` is a page_view's URL (Segment's ``screen``).
    app_urls: bool = False


OURS = Dialect(BROWSER_TYPES, SERVER_TYPES)
SEGMENT = Dialect(
    BROWSER_TYPES | SEGMENT_TYPES,
    SERVER_TYPES | SEGMENT_TYPES,
    user_id_identifies=True,
    identify_without_email=True,
    app_urls=True,
)


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
    agent = user_agent[:512] if user_agent and not trusted else None
    for index, raw in enumerate(raw_events):
        checked = validate_event(
            index, raw, site_id=site_id, trusted=trusted, received_at=received_at, user_agent=agent
        )
        if type(checked) is Rejection:
            result.rejected.append(checked)
        else:
            result.accepted.append(checked)  # type: ignore[arg-type]
    return result


def validate_event(
    index: int,
    raw: Any,
    *,
    site_id: str,
    trusted: bool,
    received_at: datetime,
    user_agent: str | None,
    dialect: Dialect = OURS,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any] | Rejection:
    """One event of a batch (``events[index]``): its ``ma.events`` value, or why not.
    ``user_agent`` is the one to keep (browsers only, at most 512 characters); ``fields``, its
    fields already read in the plain shape (``segment_api.segment_fields``), if they were."""
    if not isinstance(raw, dict):
        return Rejection(index, f"events[{index}]: expected a JSON object", raw)
    # The plain shape is checked by hand; anything else (and every error) by the model.
    if fields is None:
        fields = inbound_fields(raw)
    if fields is None:
        try:
            fields = InboundEvent.model_validate(raw).__dict__
        except ValidationError as exc:
            return Rejection(index, describe_validation_error(exc, f"events[{index}]"), raw)
    url = fields["url"]
    path = None
    if url is not None:
        path = _http_path(url)
        if path is None and dialect.app_urls:
            path = _app_path(url)
    problems = _problems(fields, trusted, dialect, url_ok=url is None or path is not None)
    if problems:
        prefix = f"events[{index}]"
        return Rejection(index, "; ".join(f"{prefix}{problem}" for problem in problems), raw)
    source = "server" if trusted else "browser"
    return normalise(fields, site_id, received_at, source, user_agent, path)


def _problems(fields: dict[str, Any], trusted: bool, dialect: Dialect, url_ok: bool) -> list[str]:
    """What is wrong with a well-typed event for this key, each as ``.field: message``."""
    kind = fields["type"]
    missing = missing_fields(kind, fields)
    if missing and kind == "identify" and dialect.identify_without_email:
        missing = []
    problems = [f".{name}: {message}" for name, message in missing] if missing else []
    allowed = dialect.server_types if trusted else dialect.browser_types
    if kind not in allowed:
        if kind in dialect.server_types:
            problems.append(f".type: {kind!r} may only be sent by a server key")
        elif kind in SEGMENT_TYPES:
            problems.append(f".type: {kind!r} comes only from Segment's calls (/v1/{kind})")
        else:
            problems.append(f".type: {kind!r} may only be sent by the collector itself")
    if not trusted:
        if fields["contact_id"] is not None:
            problems.append(".contact_id: only accepted with a server key")
        if fields["anonymous_id"] is None:
            if not dialect.user_id_identifies:
                problems.append(".anonymous_id: required from browsers (write key)")
            elif fields["user_id"] is None:
                problems.append(".anonymous_id: give anonymousId or userId")
    elif (
        fields["anonymous_id"] is None
        and fields["contact_id"] is None
        and fields["email"] is None
        and fields["user_id"] is None
    ):
        problems.append(": give anonymous_id, contact_id, user_id or email")
    if not url_ok:
        what = (
            "an absolute http(s) or app:// URL" if dialect.app_urls else "an absolute http(s) URL"
        )
        problems.append(f".url: expected {what}")
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
    user_id = fields["user_id"]
    if user_id is not None and is_garbage_identifier(user_id):
        notes.append(f"user_id {user_id!r} ignored: placeholder value")
        user_id = None
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
    if user_id is not None:
        value["user_id"] = user_id
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


def _app_path(url: str) -> str | None:
    """``/<screen>`` of an ``app://<screen>`` URL (a Segment ``screen``), or ``None``."""
    if not url.startswith(APP_URL) or len(url) == len(APP_URL) or any(c in url for c in "\t\r\n"):
        return None
    return "/" + url[len(APP_URL) :]


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
