"""Refused email-link tokens of every kind, made against a running collector's keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta

from pipeline import links
from tests.integration.collect.conftest import RunningCollector

EVIL_URL = "https://evil.example/phish"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forged(c: RunningCollector, purpose: links.Purpose) -> str:
    """Signed with a secret the collector does not have, under its own key id."""
    url = EVIL_URL if purpose == "click" else None
    return links.sign(
        contact_id="0e0e0e0e-0000-4000-8000-000000000001",
        purpose=purpose,
        url=url,
        site_id="acme",
        keys={"k2": b"not-the-real-secret-0000"},
    )


def tampered(c: RunningCollector, purpose: links.Purpose) -> str:
    """A genuine token whose payload was edited (another URL or contact), signature kept."""
    head, signature = c.sign(purpose).split(".")
    payload = json.loads(_unb64(head))
    if purpose == "click":
        payload["u"] = EVIL_URL
    else:
        payload["cid"] = "0e0e0e0e-0000-4000-8000-000000000002"
    return f"{_b64(json.dumps(payload, separators=(',', ':')).encode())}.{signature}"


def truncated(c: RunningCollector, purpose: links.Purpose) -> str:
    """Cut short, as by a mail client wrapping a long line."""
    return c.sign(purpose)[:-7]


def expired(c: RunningCollector, purpose: links.Purpose) -> str:
    return c.sign(purpose, sent=timedelta(days=2), ttl=timedelta(days=1))


def unknown_kid(c: RunningCollector, purpose: links.Purpose) -> str:
    """Signed with a retired (or invented) key id."""
    url = EVIL_URL if purpose == "click" else None
    return links.sign(
        contact_id="0e0e0e0e-0000-4000-8000-000000000003",
        purpose=purpose,
        url=url,
        keys={"k0": b"retired-secret-0123456789"},
    )


def wrong_purpose(c: RunningCollector, purpose: links.Purpose) -> str:
    """A genuine token made for another use (an unsubscribe token as a click, ...)."""
    return c.sign("unsubscribe" if purpose != "unsubscribe" else "click")


def garbage(c: RunningCollector, purpose: links.Purpose) -> str:
    return "not-a-token"


BAD_TOKENS: dict[str, tuple[Callable[[RunningCollector, links.Purpose], str], str]] = {
    "forged": (forged, "bad_signature"),
    "tampered": (tampered, "bad_signature"),
    "truncated": (truncated, ""),  # malformed or bad_signature, depending on where it is cut
    "expired": (expired, "expired"),
    "unknown_kid": (unknown_kid, "unknown_kid"),
    "wrong_purpose": (wrong_purpose, "wrong_purpose"),
    "garbage": (garbage, "malformed"),
}
