"""Plain-data builders for the pure decision tests: times, events and rules.

Times are epoch milliseconds from ``T0`` (2026-01-01T00:00:00Z, a UTC day boundary, so daily
cap windows start exactly at ``T0 + n * DAY``). Events look like ``ma.events`` values (see
``pipeline.collect.validation.normalise``).
"""

from __future__ import annotations

import textwrap
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.clock import from_millis
from pipeline.identity import contact_id_for
from pipeline.rules import Rules, load_rules, parse_rules

T0 = 1_767_225_600_000
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

ANA = "ana.lopez@acme.io"
BEN = "ben.okafor@globex.io"
CARA = "cara.smith@initech.io"

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"

_ids = iter(range(1, 10**9))


def contact(email: str) -> str:
    """The contact id of an email address."""
    return str(contact_id_for(email))


def new_id() -> str:
    """A fresh, deterministic-per-run event id (UUID text)."""
    return str(uuid.UUID(int=next(_ids)))


def aid(n: int = 1) -> str:
    """A cookie id; the same ``n`` gives the same cookie."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cookie-{n}"))


def rules(text: str) -> Rules:
    """Rules from a small YAML snippet (dedented)."""
    return parse_rules(textwrap.dedent(text))


@cache
def example_rules() -> Rules:
    """``config/rules.yaml``, the shipped example."""
    return load_rules(EXAMPLE_RULES)


def event(kind: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    """A normalised ``ma.events`` value of type ``kind`` received at ``at`` (epoch ms)."""
    value: dict[str, Any] = {
        "event_id": fields.pop("event_id", None) or new_id(),
        "type": kind,
        "site_id": "acme",
        "received_at": from_millis(at),
        "source": fields.pop("source", "browser"),
    }
    value.update({k: v for k, v in fields.items() if v is not None})
    return value


def page_view(path: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    return event("page_view", at, url=f"https://www.acme.example{path}", path=path, **fields)


def click(contact_id: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    """A (human, unless ``automated=True``) ``email_click`` for the token's contact."""
    fields.setdefault("url", "https://www.acme.example/pricing")
    fields.setdefault("path", "/pricing")
    fields.setdefault("source", "email")
    return event("email_click", at, contact_id=contact_id, **fields)


def form(email: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    return event("form_submit", at, email=email, **fields)


def identify(email: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    return event("identify", at, email=email, **fields)


def custom(name: str, at: int = T0, **fields: Any) -> dict[str, Any]:
    return event("custom", at, name=name, **fields)
