"""Signed per-recipient email links: click, open-pixel and unsubscribe tokens (CONTRACT §2).

A token is ``base64url(payload) + "." + base64url(HMAC-SHA256(secret[kid], payload))``, base64url
without padding, where ``payload`` is compact JSON::

    {"v": 1, "kid": "k2", "p": "click", "cid": "<contact uuid>", "u": "https://…",
     "c": "<campaign>", "l": "<link in the mail>", "s": "<site>", "iat": 1767225600, "exp": …}

``p`` (purpose) binds a token to one use, so a click token cannot be replayed as an unsubscribe.
``iat`` stands for the send time: a click seconds after it is a mail scanner (see
``pipeline.collect.automation``). Secrets come from ``Settings.link_keys`` (``MA_LINK_SECRETS``):
the first key signs, every key verifies, so keys rotate by adding a new ``kid`` in front and
dropping the old one once its links have expired.

Example::

    keys = {"k2": b"new-secret-0123456789", "k1": b"old-secret-0123456789"}
    token = sign(contact_id=cid, url="https://acme.io/pricing", campaign_id="spring", keys=keys)
    link_url("https://t.acme.io", token, "click")  # 'https://t.acme.io/c/eyJ2Ijox….Qm9…'
    claims = verify(token, keys=keys, now=clock.now(), purpose="click")
    claims.url  # 'https://acme.io/pricing'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pipeline import codec
from pipeline.clock import SystemClock

Purpose = Literal["click", "open", "unsubscribe"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)

LinkErrorReason = Literal[
    "malformed",
    "bad_signature",
    "unknown_kid",
    "expired",
    "wrong_purpose",
    "unsupported_version",
    "invalid_payload",
]

VERSION = 1
#: Longest token ``verify`` looks at; anything longer is refused before any decoding.
MAX_TOKEN_LENGTH = 4096
MAX_URL_LENGTH = 2048
#: Campaign, site and link ids: the same bound as ``ShortText`` in the event models.
MAX_ID_LENGTH = 200
MIN_SECRET_BYTES = 16
DEFAULT_TTL = timedelta(days=90)

_PATHS: dict[str, tuple[str, str]] = {
    "click": ("/c/", ""),
    "open": ("/o/", ".gif"),
    "unsubscribe": ("/u/", ""),
}
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ASCII_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
#: What ``str(uuid.UUID(...))`` gives: such a ``cid`` is taken as it is, without parsing it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Epoch seconds we accept in a payload: 1970 up to (not including) the year 10000.
_MAX_EPOCH = 253402300800


class LinkError(Exception):
    """A token that must not be honoured; ``reason`` is one machine word, ``message`` says why.

    Reasons: ``malformed``, ``bad_signature``, ``unknown_kid``, ``expired``, ``wrong_purpose``,
    ``unsupported_version``, ``invalid_payload``.
    """

    def __init__(self, reason: LinkErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: LinkErrorReason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a verified token says. ``issued_at`` stands for the send time."""

    contact_id: str
    purpose: Purpose
    url: str | None
    campaign_id: str | None
    site_id: str | None
    link_id: str | None
    issued_at: datetime
    expires_at: datetime
    kid: str


def sign(
    *,
    contact_id: str,
    purpose: Purpose = "click",
    url: str | None = None,
    campaign_id: str | None = None,
    site_id: str | None = None,
    link_id: str | None = None,
    keys: Mapping[str, bytes],
    kid: str | None = None,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
) -> str:
    """A signed token for one recipient and one purpose; raises ``ValueError`` on bad input.

    ``url`` is required for ``click`` and refused otherwise. The first key of ``keys`` signs
    unless ``kid`` names another. ``now`` is the issue time and should be the send time.

    Example::

        sign(contact_id="6f1c…", url="https://acme.io/p", keys={"k1": secret})  # 'eyJ2Ijox….x9Q'
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    try:
        canonical_contact = str(uuid.UUID(contact_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"contact_id {contact_id!r}: expected a UUID") from None
    if purpose == "click":
        if url is None:
            raise ValueError("url: required for a click link")
        problem = url_problem(url)
        if problem:
            raise ValueError(f"url {url!r:.100}: {problem}")
    elif url is not None:
        raise ValueError(f"url: only click links carry a URL, not {purpose} links")
    optional = {
        "c": ("campaign_id", campaign_id),
        "s": ("site_id", site_id),
        "l": ("link_id", link_id),
    }
    for name, value in optional.values():
        if value is not None:
            _check_id(name, value)
    signing_kid, secret = _signing_key(keys, kid)
    if ttl < timedelta(seconds=1):
        raise ValueError(f"ttl: must be at least one second, got {ttl}")
    issued = SystemClock().now() if now is None else now
    if issued.tzinfo is None:
        raise ValueError("now: must be timezone-aware")
    iat = int(issued.timestamp())
    payload: dict[str, Any] = {
        "v": VERSION,
        "kid": signing_kid,
        "p": purpose,
        "cid": canonical_contact,
    }
    if url is not None:
        payload["u"] = url
    for short, (_, value) in optional.items():
        if value is not None:
            payload[short] = value
    payload["iat"] = iat
    payload["exp"] = iat + int(ttl.total_seconds())
    if not 0 <= iat < payload["exp"] < _MAX_EPOCH:
        raise ValueError(f"now {issued.isoformat()} and ttl {ttl}: outside 1970 to 9999")
    data = codec.dumps(payload)
    token = f"{_b64encode(data)}.{_b64encode(_mac(secret, data))}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(
            f"token would be {len(token)} characters, over {MAX_TOKEN_LENGTH}: shorten the URL"
        )
    return token


def verify(token: str, *, keys: Mapping[str, bytes], now: datetime, purpose: str) -> LinkClaims:
    """The claims of a genuine, unexpired token made for ``purpose``; else raises ``LinkError``.

    Only ``LinkError`` is ever raised for any token text. The version and ``kid`` are read before
    the signature is checked (they decide how to check it); nothing else is trusted until then.
    A token expires at ``expires_at``: it verifies strictly before that instant.

    Example::

        verify(token, keys=settings.link_keys, now=clock.now(), purpose="click").contact_id
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    if now.tzinfo is None:
        raise ValueError("now: must be timezone-aware")
    if not isinstance(token, str):
        raise LinkError("malformed", "a token is text")
    if len(token) > MAX_TOKEN_LENGTH:
        raise LinkError("malformed", f"longer than {MAX_TOKEN_LENGTH} characters")
    if not _TOKEN.fullmatch(token):
        raise LinkError("malformed", "expected two base64url parts joined by '.'")
    encoded_payload, encoded_signature = token.split(".")
    data = _b64decode(encoded_payload)
    signature = _b64decode(encoded_signature)
    try:
        payload = codec.loads(data)
    except ValueError:
        raise LinkError("malformed", "the payload is not JSON") from None
    if not isinstance(payload, dict):
        raise LinkError("malformed", "the payload is not a JSON object")

    version = payload.get("v")
    if type(version) is not int or version != VERSION:
        raise LinkError("unsupported_version", f"version {version!r}; this build reads {VERSION}")
    kid = payload.get("kid")
    if not isinstance(kid, str):
        raise LinkError("invalid_payload", "kid: missing or not text")
    secret = keys.get(kid)
    if secret is None:
        raise LinkError("unknown_kid", f"no key {kid[:40]!r} is configured (retired or forged)")
    if not hmac.compare_digest(_mac(secret, data), signature):
        raise LinkError("bad_signature", "the signature does not match the payload")

    claims = _claims(payload, kid)
    if claims.purpose != purpose:
        raise LinkError("wrong_purpose", f"a {claims.purpose} token used as a {purpose} link")
    if now >= claims.expires_at:
        raise LinkError("expired", f"expired at {claims.expires_at.isoformat()}")
    return claims


def link_url(base_url: str, token: str, purpose: Purpose) -> str:
    """The collector URL of a token: ``{base}/c/{t}``, ``{base}/o/{t}.gif`` or ``{base}/u/{t}``.

    Example::

        link_url("https://t.acme.io/", token, "open")  # 'https://t.acme.io/o/eyJ….gif'
    """
    if purpose not in _PATHS:
        raise ValueError(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    problem = url_problem(base_url)
    if problem:
        raise ValueError(f"base_url {base_url!r:.100}: {problem}")
    if not _TOKEN.fullmatch(token):
        raise ValueError("token: expected two base64url parts joined by '.'")
    prefix, suffix = _PATHS[purpose]
    return f"{base_url.rstrip('/')}{prefix}{token}{suffix}"


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be a link target, or ``None`` if it may: absolute http(s), no spaces."""
    if not isinstance(url, str):
        return "expected text"
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if _has_forbidden_char(url):
        return "contains whitespace or control characters; percent-encode them"
    # Browsers read '\' as '/' in http(s) URLs, so 'https://a.io\@b.io' would go elsewhere.
    if "\\" in url:
        return "contains a backslash; percent-encode it"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "expected an absolute http:// or https:// URL"
    if not url.lower().startswith(f"{parts.scheme.lower()}://") or not host:
        return "expected an absolute http:// or https:// URL with a host"
    return None


def _claims(payload: dict[str, Any], kid: str) -> LinkClaims:
    """Typed claims of a signed payload; ``invalid_payload`` when a field is missing or wrong."""
    purpose = payload.get("p")
    if purpose not in PURPOSES:
        raise LinkError("invalid_payload", f"p: unknown purpose {purpose!r}")
    contact_id = payload.get("cid")
    if type(contact_id) is str and _CANONICAL_UUID.fullmatch(contact_id):
        contact = contact_id
    else:
        try:
            contact = str(uuid.UUID(contact_id))
        except (ValueError, TypeError, AttributeError):
            raise LinkError("invalid_payload", "cid: not a UUID") from None
    url = payload.get("u")
    if purpose == "click":
        if not isinstance(url, str) or url_problem(url):
            raise LinkError("invalid_payload", "u: a click token needs an http(s) URL")
    elif url is not None:
        raise LinkError("invalid_payload", f"u: a {purpose} token carries no URL")
    texts: dict[str, str | None] = {}
    for short in ("c", "s", "l"):
        value = payload.get(short)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_LENGTH):
            raise LinkError("invalid_payload", f"{short}: expected short text")
        texts[short] = value
    return LinkClaims(
        contact_id=contact,
        purpose=purpose,
        url=url,
        campaign_id=texts["c"],
        site_id=texts["s"],
        link_id=texts["l"],
        issued_at=_epoch(payload, "iat"),
        expires_at=_epoch(payload, "exp"),
        kid=kid,
    )


def _epoch(payload: dict[str, Any], field: str) -> datetime:
    value = payload.get(field)
    if type(value) is not int or not 0 <= value < _MAX_EPOCH:
        raise LinkError("invalid_payload", f"{field}: expected epoch seconds")
    return datetime.fromtimestamp(value, UTC)


def _signing_key(keys: Mapping[str, bytes], kid: str | None) -> tuple[str, bytes]:
    if not keys:
        raise ValueError("keys: at least one signing key is required (Settings.link_keys)")
    chosen = next(iter(keys)) if kid is None else kid
    if chosen not in keys:
        raise ValueError(f"kid {chosen!r}: not among the configured keys {sorted(keys)}")
    secret = keys[chosen]
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"key {chosen!r}: secret shorter than {MIN_SECRET_BYTES} bytes")
    return chosen, secret


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected non-empty text")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name}: longer than {MAX_ID_LENGTH} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError(f"{name}: contains control characters")


def _has_forbidden_char(text: str) -> bool:
    # ASCII text (nearly every URL) by one search: there, exactly the controls and the space.
    if text.isascii():
        return _ASCII_FORBIDDEN.search(text) is not None
    return any(_is_forbidden_char(ch) for ch in text)


def _is_forbidden_char(ch: str) -> bool:
    # Whitespace (Z*), controls, format characters such as bidi overrides, surrogates (C*).
    return ch.isspace() or unicodedata.category(ch)[0] in "CZ"


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.digest(secret, data, hashlib.sha256)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode unpadded base64url; only the canonical encoding is accepted (no malleable bits)."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LinkError("malformed", "not base64url") from None
    if _b64encode(data) != text:
        raise LinkError("malformed", "not canonical base64url")
    return data
