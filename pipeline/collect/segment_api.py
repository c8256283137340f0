"""Segment's HTTP tracking API on the collector (CONTRACT §2 "Segment-compatible tracking API"):
sites keep Segment's or RudderStack's SDKs and change only the host.

A call of Segment's spec becomes the inbound event our own ``/v1/batch`` would take
(``translate``), then goes the one way every event goes: ``validate_event`` (dialect
``SEGMENT``), the dead letter of what is refused, the same size and rate limits, ``acks=all``
before the answer, ``503`` while the broker is away. Only the envelope, the key and the answer
differ, and they are here:

- ``POST /v1/batch`` with ``{"batch": [...]}`` (``Collector.batch`` hands it over when the body
  has a ``batch`` array), the single calls ``/v1/track``, ``/identify``, ``/page``, ``/screen``,
  ``/group``, ``/alias``, and analytics.js's short paths (``/v1/t``, ``/p``, …, ``/b``);
- the key: HTTP Basic with the write key (or a server key) as user name, or ``writeKey`` in
  the body; it finds the site;
- the answers Segment's SDKs read: ``200 {"success": true}``, else ``{"code", "message"}``.

Example::

    raw, agent = translate({"type": "track", "event": "Signed Up", "userId": "42"}, "acme", {})
    # raw == {"type": "custom", "name": "Signed Up", "user_id": "42", "properties": {}, ...}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipeline import codec
from pipeline.collect.fast_path import (
    _CANONICAL_UUID,
    FIELDS,
    TEXT_LIMITS,
    is_plain_map,
    plain_text,
    utc_time,
)
from pipeline.collect.http import (
    EnvelopeError,
    decoded_body,
    event_key,
    origin_allowed,
    read_limited,
    same_key,
)
from pipeline.collect.validation import (
    APP_URL,
    SEGMENT,
    Rejection,
    validate_event,
)
from pipeline.identity import CONTACT_NAMESPACE
from pipeline.kafka import BrokerUnavailable, Record
from pipeline.models.events import MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from pipeline.models.types import MAX_IDENTIFIER_LENGTH
from pipeline.rules import Site

if TYPE_CHECKING:
    from pipeline.collect.app import Collector

#: The single calls, by path: Segment's names and analytics.js's one-letter ones.
CALL_PATHS = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
#: analytics.js's batching dispatcher posts ``{"batch": [...], "writeKey"}`` here.
BATCH_PATH = "b"
#: Segment's limit per call; a batch keeps ours (``MAX_BATCH_BYTES``, ``MAX_BATCH_EVENTS``).
MAX_CALL_BYTES = 32 * 1024
RETRY_AFTER = "5"
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    # analytics.js sends its key as Basic auth, and X-Retry-Count when it retries
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Retry-Count",
    "Access-Control-Max-Age": "86400",
}


class SegmentError(Exception):
    """A request Segment's SDKs must be told is unusable: ``status``, ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def is_segment_envelope(envelope: object) -> bool:
    """A ``POST /v1/batch`` body in Segment's shape: it has a ``batch`` array."""
    return isinstance(envelope, dict) and isinstance(envelope.get("batch"), list)


def sent_by_segment_sdk(request: web.Request) -> bool:
    """HTTP Basic auth: how Segment's SDKs send their key (ours use Bearer or ``write_key``)."""
    return request.headers.get("Authorization", "")[:6].lower() == "basic "


class SegmentApi:
    """The Segment-shaped endpoints of one ``Collector`` (its producer, rules, limits)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def add_routes(self, app: web.Application) -> None:
        for path in (*CALL_PATHS, BATCH_PATH):
            app.router.add_post(f"/v1/{path}", self.call)
            app.router.add_route("OPTIONS", f"/v1/{path}", self.preflight)

    async def preflight(self, request: web.Request) -> web.Response:
        headers = self.collector.cors_headers(request, None)
        if "Access-Control-Allow-Origin" in headers:
            headers.update(_CORS_PREFLIGHT)
        return web.Response(status=204, headers=headers)

    async def call(self, request: web.Request) -> web.Response:
        """``POST /v1/track`` and the other single calls, and analytics.js's ``/v1/b``."""
        name = request.match_info.route.resource.canonical.rsplit("/", 1)[-1]  # type: ignore[union-attr]
        limit = MAX_BATCH_BYTES if name == BATCH_PATH else MAX_CALL_BYTES
        try:
            body = await read_limited(request, limit)
        except EnvelopeError as exc:
            return await self.refuse(
                request, None, SegmentError(exc.status, error_code(exc.status), exc.message)
            )
        try:
            envelope = _loads(body)
        except SegmentError as exc:
            return await self.refuse(request, body, exc)
        if name == BATCH_PATH:
            return await self.batch(request, body, envelope)
        if not isinstance(envelope, dict):
            error = SegmentError(400, "invalid_request", "body must be a JSON object (one call)")
            return await self.refuse(request, body, error)
        return await self.accept(request, body, envelope, [{**envelope, "type": CALL_PATHS[name]}])

    async def batch(self, request: web.Request, body: bytes, envelope: object) -> web.Response:
        """``POST /v1/batch`` in Segment's shape (``is_segment_envelope``)."""
        if not isinstance(envelope, dict) or not isinstance(envelope.get("batch"), list):
            error = SegmentError(400, "invalid_request", 'body must be {"batch": [calls]}')
            return await self.refuse(request, body, error)
        calls: list[Any] = envelope["batch"]
        if len(calls) > MAX_BATCH_EVENTS:
            error = SegmentError(
                413,
                "payload_too_large",
                f"batch: at most {MAX_BATCH_EVENTS} calls per request, got {len(calls)}",
            )
            return await self.refuse(request, body, error)
        if not calls:
            error = SegmentError(400, "invalid_request", "batch: empty; send at least one call")
            return await self.refuse(request, body, error)
        return await self.accept(request, body, envelope, calls)

    async def accept(
        self, request: web.Request, body: bytes, envelope: dict[str, Any], calls: list[Any]
    ) -> web.Response:
        """Validate each call as an event of ``site``; refuse the request only when its key
        is wrong or the broker does not acknowledge."""
        collector = self.collector
        try:
            site, trusted = self.site_for(request, envelope)
        except SegmentError as exc:
            return await self.refuse(request, body, exc)
        cors = collector.cors_headers(request, site)
        if collector.rate_limited(site, request):
            return _answer(
                429,
                "rate_limited",
                "rate limit exceeded; retry later",
                {"Retry-After": "1", **cors},
            )
        source = f"collector:{request.path}"
        shared_context = envelope.get("context")
        request_agent = None if trusted else request.headers.get("User-Agent")
        received_at = collector.now()
        records: list[Record] = []
        accepted: list[dict[str, Any]] = []
        topic = collector.events_topic
        for index, call in enumerate(calls):
            checked: dict[str, Any] | Rejection
            if not isinstance(call, dict):
                checked = Rejection(index, f"batch[{index}]: expected a JSON object", call)
            else:
                # the common calls in one pass; anything else translated, then the model's
                fields, agent = segment_fields(call, site.id, shared_context)
                agent = agent or request_agent
                kept_agent = agent[:512] if agent else None
                raw = call if fields is not None else translate(call, site.id, shared_context)[0]
                checked = validate_event(
                    index,
                    raw,
                    site_id=site.id,
                    trusted=trusted,
                    received_at=received_at,
                    user_agent=kept_agent,
                    dialect=SEGMENT,
                    fields=fields,
                )
            if type(checked) is Rejection:
                error = checked.error.replace("events[", "batch[", 1)
                records.append(collector.dead_letter(source, error, call))
            else:
                value: dict[str, Any] = checked  # type: ignore[assignment]
                accepted.append(value)
                records.append((topic, event_key(value), codec.dumps(value)))
        try:
            await collector.deliver(records)
        except BrokerUnavailable:
            return _answer(
                503,
                "unavailable",
                "the broker did not acknowledge; retry later",
                {"Retry-After": RETRY_AFTER, **cors},
            )
        collector.count_accepted(site.id, accepted)
        return web.Response(body=b'{"success":true}', content_type="application/json", headers=cors)

    def site_for(self, request: web.Request, envelope: Mapping[str, Any]) -> tuple[Site, bool]:
        """The site whose key the request carries, and whether it is a server key."""
        key = _basic_user(request.headers.get("Authorization", ""))
        if key is None:
            given = envelope.get("writeKey")
            key = given if isinstance(given, str) else None
        if not key:
            raise SegmentError(
                400,
                "invalid_write_key",
                "no write key: send it as the HTTP Basic user name or as writeKey",
            )
        rules = self.collector.rules.rules
        for site in rules.sites:
            if same_key(key, site.write_key):
                origin = request.headers.get("Origin")
                if origin and not origin_allowed(site, origin):
                    raise SegmentError(
                        400,
                        "invalid_origin",
                        f"Origin {origin[:200]!r} is not allowed for site {site.id!r}",
                    )
                return site, False
        credential = self.collector.identify(key)
        if credential is None:
            raise SegmentError(
                400, "invalid_write_key", "the write key is not one of a configured site"
            )
        sites = credential.ingest_sites
        if not sites:
            raise SegmentError(
                403,
                "forbidden",
                f"scope ingest:<site> required: key {credential.id!r} may send events for no site",
            )
        if len(sites) > 1:
            raise SegmentError(
                400,
                "invalid_write_key",
                f"key {credential.id!r} may send events for {len(sites)} sites "
                f"({', '.join(sites)}) and Segment's calls name none: use a key with one "
                "ingest:<site> scope",
            )
        granted = rules.site(sites[0])
        assert granted is not None  # the rules validate every ingest scope's site
        return granted, True

    async def refuse(
        self, request: web.Request, body: bytes | None, error: SegmentError
    ) -> web.Response:
        """The dead letter of an unusable request, then Segment's error answer."""
        collector = self.collector
        letter = [
            collector.dead_letter(
                f"collector:{request.path}", error.message, decoded_body(body, request)
            )
        ]
        if not await collector.deliver_best_effort(letter) and error.status != 413:
            return _answer(
                503,
                "unavailable",
                "the broker is unavailable; retry later",
                {"Retry-After": RETRY_AFTER},
            )
        return _answer(
            error.status, error.code, error.message, collector.cors_headers(request, None)
        )


def segment_fields(
    call: dict[str, Any], site_id: str, shared_context: object = None
) -> tuple[dict[str, Any] | None, str | None]:
    """``inbound_fields(translate(call)[0])`` in one pass, for the calls SDKs send most (page,
    track, identify, screen) in the plain shape; ``None`` for anything else (group, alias, a
    value the model must judge): then ``translate`` and the model decide. And the user agent
    the call's context names. ``tests/unit/collect/test_segment_api.py`` pins the two equal."""
    get = call.get
    context = get("context")
    if type(context) is not dict:
        context = shared_context if type(shared_context) is dict else _EMPTY
    agent = context.get("userAgent")
    if type(agent) is not str:
        agent = None
    properties = get("properties")
    if type(properties) is not dict:
        properties = {}
    elif not is_plain_map(properties):
        return None, agent
    fields = _NO_FIELDS.copy()
    fields["properties"] = dict(properties)
    fields["traits"] = {}
    message_id = get("messageId")
    if message_id is not None and message_id != "":
        fields["event_id"] = event_id_for(site_id, message_id)
    for field, key in _IDENTIFIERS:
        value = get(key)
        if value is not None and value != "":
            if type(value) is int:
                value = str(value)
            if not plain_text(value, MAX_IDENTIFIER_LENGTH) or (
                value[0].isspace() or value[-1].isspace()  # the model strips: let it
            ):
                return None, agent
            fields[field] = value
    timestamp = get("timestamp") or get("originalTimestamp")
    if timestamp is not None:
        fields["ts"] = ts = utc_time(timestamp)
        if ts is None:
            return None, agent
    kind = get("type")
    texts: tuple[tuple[str, Any], ...]
    if kind == "page":
        page = context.get("page")
        if type(page) is not dict:
            page = _EMPTY
        fields["type"] = "page_view"
        texts = (
            ("url", properties.get("url") or page.get("url")),
            ("title", properties.get("title") or page.get("title")),
            ("referrer", properties.get("referrer") or page.get("referrer") or None),
            ("name", get("name")),
        )
    elif kind == "track":
        fields["type"] = "custom"
        texts = (("name", get("event")),)
    elif kind == "identify":
        traits = dict(_traits(call, context))
        fields["type"] = "identify"
        email = traits.pop("email", None)
        texts = (("email", email),)
        if email is not None and fields["user_id"] is not None:
            traits["user_id"] = fields["user_id"]
        if not is_plain_map(traits):
            return None, agent
        fields["traits"] = traits
    elif kind == "screen":
        name = get("name")
        fields["type"] = "page_view"
        url = f"{APP_URL}{name}" if isinstance(name, str) and name else None
        texts = (("url", url), ("title", name))
    else:
        return None, agent
    for field, value in texts:
        if value is not None:
            if not plain_text(value, TEXT_LIMITS[field]):
                return None, agent
            fields[field] = value
    return fields, agent


def translate(
    call: dict[str, Any], site_id: str, shared_context: object = None
) -> tuple[dict[str, Any], str | None]:
    """One Segment call as the inbound event our ``/v1/batch`` takes, and the user agent its
    context names. Nothing is judged here: ``validate_event`` does, with its messages. (Runs
    for every call: one look at each field, no intermediate copies.)"""
    get = call.get
    context = get("context")
    if type(context) is not dict:
        context = shared_context if type(shared_context) is dict else _EMPTY
    properties = get("properties")
    if type(properties) is not dict:
        properties = {}
    raw: dict[str, Any] = {"properties": properties}
    message_id = get("messageId")
    if message_id is not None and message_id != "":
        raw["event_id"] = event_id_for(site_id, message_id)
    for field, key in _IDENTIFIERS:
        value = get(key)
        if value is not None and value != "":
            # Segment ids may be numbers; anything else is left to the model to refuse
            raw[field] = str(value) if type(value) is int else value
    timestamp = get("timestamp") or get("originalTimestamp")
    if timestamp is not None:
        raw["ts"] = timestamp
    kind = get("type")
    if kind == "page":
        page = context.get("page")
        if type(page) is not dict:
            page = _EMPTY
        raw["type"] = "page_view"
        _put(raw, "url", properties.get("url") or page.get("url"))
        _put(raw, "title", properties.get("title") or page.get("title"))
        _put(raw, "referrer", properties.get("referrer") or page.get("referrer") or None)
        _put(raw, "name", get("name"))
    elif kind == "track":
        raw["type"] = "custom"
        _put(raw, "name", get("event"))
    elif kind == "screen":
        name = get("name")
        raw["type"] = "page_view"
        _put(raw, "url", f"{APP_URL}{name}" if isinstance(name, str) and name else None)
        _put(raw, "title", name)
    elif kind == "identify":
        traits = dict(_traits(call, context))
        raw["type"] = "identify"
        email = traits.pop("email", None)
        if email is not None:
            raw["email"] = email
            if "user_id" in raw:
                traits["user_id"] = raw["user_id"]
        raw["traits"] = traits
    elif kind == "group":
        raw["type"] = "group"
        company = _traits(call, context).get("name")
        raw["traits"] = {"company": company} if company else {}
        raw["properties"] = {**properties, "group_id": get("groupId")}
    elif kind == "alias":
        raw["type"] = "alias"
        raw["properties"] = {**properties, "previous_id": get("previousId")}
    else:
        _put(raw, "type", kind)  # the model names what is wrong with it
    agent = context.get("userAgent")
    return raw, agent if type(agent) is str else None


_EMPTY: dict[str, Any] = {}
_NO_FIELDS: dict[str, Any] = dict.fromkeys(FIELDS)
_IDENTIFIERS = (("anonymous_id", "anonymousId"), ("user_id", "userId"))


def _put(raw: dict[str, Any], field: str, value: object) -> None:
    if value is not None:
        raw[field] = value


def _traits(call: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The call's traits, else its context's (analytics.js puts them there on track calls)."""
    return _mapping(call.get("traits")) or _mapping(context.get("traits"))


def event_id_for(site_id: str, message_id: object) -> str:
    """``messageId`` as an ``event_id``: a UUID as is, anything else hashed with the site (an
    SDK's retry sends the same ``messageId``, so it is the same event)."""
    if type(message_id) is str and _CANONICAL_UUID.fullmatch(message_id):
        return message_id  # what the server SDKs send (uuid4 texts)
    text = str(message_id)
    lowered = text.lower()
    if _CANONICAL_UUID.fullmatch(lowered):
        return lowered
    return uuid5_text(f"{site_id}:{text}")


_NAMESPACE = CONTACT_NAMESPACE.bytes


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(CONTACT_NAMESPACE, name))`` without the UUID object: a quarter of its
    cost, for every analytics.js call (its ``messageId``s are no UUIDs)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode()).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _basic_user(authorization: str) -> str | None:
    """The user name of ``Authorization: Basic base64(user:password)``, or None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _loads(body: bytes) -> object:
    try:
        return codec.loads(body.removeprefix(b"\xef\xbb\xbf"))
    except codec.JSONDecodeError as exc:
        raise SegmentError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc


def error_code(status: int) -> str:
    return {403: "forbidden", 413: "payload_too_large"}.get(status, "invalid_request")


def _answer(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=codec.dumps({"code": code, "message": message}),
        status=status,
        content_type="application/json",
        headers=headers,
    )
