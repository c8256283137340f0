"""What every collector endpoint does alike with a request: read its body within a limit, find
its key, and say why it is unusable (``EnvelopeError``). Shared by our own endpoints
(``pipeline.collect.app``) and Segment's (``pipeline.collect.segment_api``).

Example::

    body = await read_limited(request, MAX_BATCH_BYTES)   # EnvelopeError(413) beyond it
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from pipeline import codec
from pipeline.identity import user_key
from pipeline.models.dead_letter import MAX_DEAD_LETTER_PAYLOAD
from pipeline.rules import Site
from pipeline.rules.keys import Credential


class EnvelopeError(Exception):
    """The request as a whole is unusable (400/401/403/413); ``status`` and a clear message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body (decompressed, as aiohttp does for ``Content-Encoding: gzip``), at most
    ``limit`` bytes of it; ``EnvelopeError`` 413 beyond, 400 when it cannot be decompressed."""
    if request.content_length is not None and request.content_length > limit:
        raise EnvelopeError(
            413, f"body: at most {limit // 1024} KiB, got {request.content_length} bytes"
        )
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await content.read(65536):
            size += len(chunk)
            if size > limit:
                raise EnvelopeError(413, f"body: at most {limit // 1024} KiB")
            if not chunks and content.at_eof():
                return chunk  # the whole body in one read (nearly every request)
            chunks.append(chunk)
    except (HttpProcessingError, RequestPayloadError) as exc:
        encoding = request.headers.get("Content-Encoding", "none")[:40]
        cause = " ".join(str(exc).split()).removeprefix("400, message: ")
        # Nothing more of this body can be read: say so, or aiohttp tries to read the rest
        # after the answer and logs the same error again as an "Unhandled exception".
        request.content.feed_eof()
        raise EnvelopeError(
            400, f"body: not readable as Content-Encoding {encoding!r} ({cause})"
        ) from exc
    return b"".join(chunks)


def decoded_body(body: bytes | None, request: web.Request) -> Any:
    """A refused body as its dead letter keeps it: the JSON it holds, else its text."""
    if body is None:
        return {"content_length": request.content_length}
    try:
        return codec.loads(body)
    except codec.JSONDecodeError:
        return body[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", errors="replace")


def event_key(value: dict[str, Any]) -> bytes:
    """An ``ma.events`` value's key (``pipeline.models.Event.key``)."""
    key = value.get("anonymous_id") or value.get("contact_id")
    if key is None:
        user_id = value.get("user_id")
        key = user_key(value["site_id"], user_id) if user_id else value["event_id"]
    return str(key).encode()


def require(credential: Credential, scope: str) -> None:
    """EnvelopeError 403 naming ``scope`` unless the key holds it."""
    if not credential.allows(scope):
        raise EnvelopeError(403, f"scope {scope} required: key {credential.id!r} does not have it")


def same_key(given: str, expected: str) -> bool:
    """Constant-time comparison of a key given with one configured."""
    return hmac.compare_digest(given.encode(), expected.encode())


def origin_allowed(site: Site, origin: str) -> bool:
    return not site.allowed_origins or "*" in site.allowed_origins or origin in site.allowed_origins
