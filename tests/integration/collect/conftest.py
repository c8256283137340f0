"""A real collector on a loopback port, in this process, writing to the real broker; helpers to
sign email links and to read what landed on a topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import codec, links
from pipeline.collect.app import Collector
from pipeline.rules import RulesWatcher, parse_rules
from pipeline.settings import Settings
from tests.conftest import REPO

SITE = "acme"
WRITE_KEY = "wk_acme_public_7d1f3a"
SERVER_KEY = "sk_acme_secret_4b9e0c6a2f8d"  # the site's server key: ingest:acme only
#: The example rules' ``crm-sync`` key (contacts:write, segments:read).
CRM_KEY = "mak_example_crm_sync_change_me"
ORIGIN = "http://localhost:8000"
FALLBACK_URL = "https://www.acme.example/"
AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"
CONTACT = "6f1c2a9e-8b3d-4c7e-9a51-2d4e6f8a0b13"
#: A person's browser (the test client's own "Python/… aiohttp/…" is judged a scanner).
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
RULES_TEXT = (REPO / "config" / "rules.yaml").read_text()


@dataclass
class Message:
    key: bytes | None
    value: Any


@dataclass
class RunningCollector:
    url: str
    collector: Collector
    settings: Settings
    http: aiohttp.ClientSession

    async def post_batch(
        self, events: list[object], *, headers: dict[str, str] | None = None, **envelope: object
    ) -> aiohttp.ClientResponse:
        body = {"site_id": SITE, "write_key": WRITE_KEY, **envelope, "events": events}
        response = await self.http.post(f"{self.url}/v1/batch", json=body, headers=headers or {})
        await response.read()
        return response

    async def get(
        self, path: str, *, cookie: str | None = None, user_agent: str = BROWSER_UA, **kw: Any
    ) -> aiohttp.ClientResponse:
        """GET (or ``method=...``) without following redirects; the body is read."""
        headers = {"User-Agent": user_agent, **kw.pop("headers", {})}
        if cookie is not None:
            headers["Cookie"] = cookie
        method = kw.pop("method", "GET")
        response = await self.http.request(
            method, f"{self.url}{path}", headers=headers, allow_redirects=False, **kw
        )
        await response.read()
        return response

    def use_rules(self, *replacements: tuple[str, str]) -> None:
        """Swap in ``config/rules.yaml`` with text replaced (as a reload would)."""
        text = RULES_TEXT
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        self.collector.rules.rules = parse_rules(text)

    def sign(
        self,
        purpose: links.Purpose = "click",
        *,
        contact_id: str = CONTACT,
        url: str | None = None,
        sent: timedelta = timedelta(hours=1),
        **claims: Any,
    ) -> str:
        """A genuine token of this collector's keys, issued ``sent`` ago."""
        if purpose == "click" and url is None:
            url = "https://www.acme.example/pricing?utm_source=mail&plan=pro"
        claims.setdefault("site_id", SITE)
        return links.sign(
            contact_id=contact_id,
            purpose=purpose,
            url=url,
            keys=self.settings.link_keys,
            now=datetime.now(UTC) - sent,
            **claims,
        )

    async def read(self, topic: str) -> list[Message]:
        """Everything on one of this test's topics now (``events``, ``dead-letter``, ...)."""
        return await read_topic(self.settings, topic)

    async def values(self, topic: str) -> list[Any]:
        return [m.value for m in await self.read(topic)]


async def read_topic(settings: Settings, name: str, bootstrap: str | None = None) -> list[Message]:
    """Every record of a topic up to its current end. No waiting is needed: the collector
    answers only after the broker acknowledged (or gave up on) what it wrote."""
    topic = settings.topic(name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap or settings.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages: list[Message] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for records in batch.values():
                messages += [
                    Message(r.key, codec.loads(r.value) if r.value else None) for r in records
                ]
        return messages
    finally:
        await consumer.stop()


@pytest.fixture
async def collector(topics: Settings) -> AsyncIterator[RunningCollector]:
    app_state = Collector(topics, RulesWatcher(topics.config))
    runner = web.AppRunner(app_state.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", topics.http_port)
    await site.start()
    # No cookie jar: each test says which Cookie header a request carries.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield RunningCollector(f"http://127.0.0.1:{topics.http_port}", app_state, topics, http)
    await runner.cleanup()
