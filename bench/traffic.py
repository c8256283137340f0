"""Synthetic traffic for the pipeline sections: what browsers post, and what the collector writes
to ``ma.events`` (the worker's input).

- ``browser_events``: events as the JS tag posts them to ``/v1/batch`` (no server fields).
- ``worker_events``: ``ma.events`` values of browsing sessions: many cookies, mostly page views,
  some custom events, identifies and form submits; a person has a couple of devices and now
  and then someone else types their email on a shared computer (a re-link). Adapted from
  ``tests/integration/worker/test_recovery.py::workload``, scaled up.
- ``contact_work_values``: ``x.contact-work`` values (stage 1's resolved events), the sink's
  input.

Example::

    events = worker_events(20_000, seed=3)
    [e["type"] for e in events[:3]]   # ['page_view', 'page_view', 'custom']
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.baselines import PAGES, REFERRERS, USER_AGENTS, realistic_events
from pipeline import contact_id_for

#: Pages of the example rules' scoring and trigger rules, and others.
WORKER_PAGES = [
    *PAGES,
    ("/pricing", "Pricing | Acme"),
    ("/products/sample-kit", "Sample kit | Acme"),
    ("/blog/marketing/attribution", "Attribution, explained | Acme"),
    ("/blog/marketing/data-driven-marketing", "Data-driven marketing | Acme"),
]
FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dev", "Eva", "Femi", "Grace", "Hugo", "Ines", "Jun"]
TITLES = ["Marketing Manager", "CTO", "Developer", "Head of Sales", "Analyst", "Founder"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]
DOMAINS = ["globex.io", "initech.com", "umbrella.co", "hooli.com", "vandelay.de", "acme.io"]


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def browser_events(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` events as the JS tag posts them (``ts`` in epoch ms); ~75% page views."""
    events = []
    now_ms = int(time.time() * 1000)
    for i, event in enumerate(realistic_events(n, seed=seed)):
        posted: dict[str, Any] = {
            "event_id": event["event_id"],
            "type": event["type"],
            "anonymous_id": event["anonymous_id"],
            "ts": now_ms - i % 900,
            "url": event["url"],
            "title": event["title"],
        }
        if event["referrer"]:
            posted["referrer"] = event["referrer"]
        if event["type"] == "custom":
            posted["name"] = event["name"]
            posted["properties"] = event["properties"]
        elif event["type"] in ("form_submit", "identify"):
            local, _, _ = event["email"].partition("@")
            posted["email"] = f"{local}@{DOMAINS[zlib.crc32(local.encode()) % len(DOMAINS)]}"
            posted["traits"] = event["traits"]
            if "form_id" in event:
                posted["form_id"] = event["form_id"]
        events.append(posted)
    return events


_SEGMENT_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36"


def segment_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``browser_events`` as analytics.js sends them (Segment's spec): page, track, identify."""
    calls = []
    for event in events:
        call: dict[str, Any] = {
            "messageId": event["event_id"],
            "anonymousId": event["anonymous_id"],
            # as analytics.js writes it (Date.toISOString)
            "timestamp": datetime.fromtimestamp(event["ts"] / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "context": {"userAgent": _SEGMENT_UA, "library": {"name": "analytics.js"}},
        }
        if event["type"] == "page_view":
            page = {"url": event["url"], "title": event["title"]}
            if event.get("referrer"):
                page["referrer"] = event["referrer"]
            call.update(type="page", properties=page)
            call["context"]["page"] = page
        elif event["type"] == "custom":
            call.update(type="track", event=event["name"], properties=event["properties"])
        else:
            call.update(type="identify", traits={"email": event["email"], **event["traits"]})
        calls.append(call)
    return calls


def worker_events(
    n: int, *, seed: int, cookies: int | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """``n`` ``ma.events`` values ending at ``end`` (now), ~5 ms apart, interleaved over
    ``cookies`` browsers (default ``n // 8``); ~80% page views, 8% custom, 7% identifies, 5% form
    submits. Each cookie has an owner (a person has ~2 cookies); 15% of a cookie's identifies and
    forms are someone else's (a shared computer: a re-link)."""
    rng = random.Random(seed)
    cookies = cookies or max(n // 8, 1)
    people = max(cookies // 2, 1)
    salt = rng.getrandbits(32)
    aids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(cookies)]
    owners = [rng.randrange(people) for _ in range(cookies)]
    end = end or datetime.now(UTC)
    at = end - timedelta(milliseconds=5 * n)
    events = []
    for _ in range(n):
        at += timedelta(milliseconds=rng.randint(1, 9))
        c = rng.randrange(cookies)
        path, title = rng.choice(WORKER_PAGES)
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": "page_view",
            "site_id": "acme",
            "received_at": _iso(at),
            "client_ts": _iso(at - timedelta(milliseconds=rng.randint(5, 900))),
            "source": "browser",
            "anonymous_id": aids[c],
            "url": f"https://www.acme.example{path}",
            "path": path,
            "referrer": rng.choice(REFERRERS),
            "title": title,
            "properties": {},
            "traits": {},
            "user_agent": USER_AGENTS[c % len(USER_AGENTS)],
            "automated": False,
        }
        roll = rng.random()
        if roll < 0.08:
            event["type"] = "custom"
            event["name"] = rng.choice(["video_played", "pricing_toggle", "trial_signup"])
            event["properties"] = {"plan": rng.choice(["starter", "growth", "enterprise"])}
        elif roll < 0.2:
            person = owners[c] if rng.random() < 0.85 else rng.randrange(people)
            email = f"p{person}.{salt}@{DOMAINS[person % len(DOMAINS)]}"
            event["type"] = "identify" if roll < 0.15 else "form_submit"
            event["email"] = email
            event["traits"] = {
                "first_name": FIRST_NAMES[person % len(FIRST_NAMES)],
                "title": TITLES[person % len(TITLES)],
                "company": COMPANIES[person % len(COMPANIES)],
            }
            if event["type"] == "form_submit":
                event["form_id"] = rng.choice(["demo-request", "whitepaper", "newsletter"])
                event["traits"]["consent_email"] = rng.random() < 0.7
        events.append(event)
    return events


def contact_work_values(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` ``x.contact-work`` event values as stage 1 sends them (resolved events, as
    decoded from JSON): ~60% resolved to a contact, the rest anonymous, some of those
    before their cookie's first link."""
    rng = random.Random(seed)
    values = []
    for i, event in enumerate(worker_events(n, seed=seed)):
        roll = rng.random()
        if event.get("email"):
            contact: str | None = str(contact_id_for(event["email"]))
        elif roll < 0.6:
            contact = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            contact = None
        resolved = {**event, "contact_id": contact, "pre_identification": contact is None}
        values.append({"k": "event", "e": resolved, "src": [i % 8, i, 0]})
    return values
