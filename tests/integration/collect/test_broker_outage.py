"""The broker goes away under load and comes back: the collector answers 503 with Retry-After
meanwhile, never a 200 that is not durable, and no event it acknowledged is lost. Pixels and
email clicks, which must answer at once, are spooled and reach the broker once it is back.

Runs its own broker (the session's one must stay up for the other tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pipeline import links
from pipeline.broker import LocalBroker
from pipeline.collect import pages
from pipeline.collect.app import Collector
from pipeline.kafka import JsonProducer
from pipeline.rules import RulesWatcher, parse_rules
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import REPO, free_port
from tests.integration.collect.conftest import (
    BROWSER_UA,
    CONTACT,
    CRM_KEY,
    RULES_TEXT,
    SITE,
    WRITE_KEY,
    read_topic,
)

pytestmark = pytest.mark.integration

CLIENTS = 4
EVENTS_PER_BATCH = 5
PIXEL = {"site_id": SITE, "key": WRITE_KEY, "url": "https://www.acme.example/"}
TARGET = "https://www.acme.example/pricing"
PERSON = {"User-Agent": BROWSER_UA}


@dataclass
class Answer:
    started: float
    finished: float
    status: int
    retry_after: str | None
    event_ids: list[str]


@dataclass
class Load:
    """Clients posting batches without pause; a refused batch is retried with the same ids."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    running: bool = True

    def acknowledged(self) -> set[str]:
        return {i for a in self.answers if a.status == 200 for i in a.event_ids}

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for a in self.answers if a.status == status and a.started >= since)

    async def client(self, http: aiohttp.ClientSession) -> None:
        batch: list[str] = []
        while self.running:
            batch = batch or [str(uuid.uuid4()) for _ in range(EVENTS_PER_BATCH)]
            events = [
                {
                    "type": "page_view",
                    "event_id": event_id,
                    "anonymous_id": event_id,  # any UUID; spreads keys over partitions
                    "url": "https://www.acme.example/pricing",
                }
                for event_id in batch
            ]
            body = {"site_id": SITE, "write_key": WRITE_KEY, "events": events}
            started = time.monotonic()
            try:
                async with http.post(f"{self.url}/v1/batch", json=body) as response:
                    await response.read()
                    status, retry_after = response.status, response.headers.get("Retry-After")
            except aiohttp.ClientError:
                status, retry_after = 0, None
            self.answers.append(Answer(started, time.monotonic(), status, retry_after, batch))
            if status == 200:
                batch = []
            else:
                await asyncio.sleep(0.1)  # the tag backs off longer; the test has no time

    async def until(self, condition: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                statuses = [a.status for a in self.answers[-20:]]
                raise AssertionError(f"timed out waiting for {what}; last statuses {statuses}")
            await asyncio.sleep(0.05)


async def spooled_records_arrive(settings: Settings, timeout: float = 15) -> None:
    """Wait until the pixel, the click and the open answered during the outage are on
    ma.events."""
    deadline = time.monotonic() + timeout
    while True:
        values = [m.value for m in await read_topic(settings, "events")]
        pixels = [v for v in values if v.get("title") == "spooled"]
        clicks = [v for v in values if v["type"] == "email_click"]
        opens = [v for v in values if v["type"] == "email_open"]
        if pixels and clicks and opens:
            assert clicks[0]["contact_id"] == CONTACT
            return
        assert time.monotonic() < deadline, "the spooled pixel, click or open never arrived"
        await asyncio.sleep(0.5)


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[tuple[LocalBroker, Settings]]:
    port = free_port()
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        topic_prefix="outage.",
        topic_partitions=2,
        data_dir=tmp_path,
        cache_dir=REPO / ".cache",
        broker_port=port,
        broker_controller_port=free_port(),
        broker_heap="384m",
        config=REPO / "config" / "rules.yaml",
        http_port=free_port(),
    )
    broker = LocalBroker(settings)
    await asyncio.to_thread(broker.start)
    try:
        await ensure_topics(settings)
        yield broker, settings
    finally:
        await asyncio.to_thread(broker.stop)


async def test_a_broker_outage_gets_503s_and_loses_no_acknowledged_event(
    own_broker: tuple[LocalBroker, Settings],
) -> None:
    broker, settings = own_broker
    sent = datetime.now(UTC) - timedelta(hours=1)
    producer = JsonProducer(settings, ack_timeout=2.0, client_id="ma-collector")
    collector = Collector(settings, RulesWatcher(settings.config), producer=producer)
    collector.rules.rules = parse_rules(  # one client IP, a lot of requests
        RULES_TEXT.replace("{per_second: 50, burst: 200}", "{per_second: 100000, burst: 100000}")
    )
    runner = web.AppRunner(collector.make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
    url = f"http://127.0.0.1:{settings.http_port}"
    load = Load(url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    clients = [asyncio.create_task(load.client(http)) for _ in range(CLIENTS)]
    try:
        await load.until(lambda: load.count(200) >= 20, 20, "200s before the outage")

        await asyncio.to_thread(broker.stop)
        down = time.monotonic()
        await load.until(lambda: load.count(503, since=down) >= 8, 30, "503s while down")
        ready = await http.get(f"{url}/readyz")
        assert ready.status == 503
        assert ready.headers["Retry-After"]
        pixel = await http.get(f"{url}/v1/p.gif", params={**PIXEL, "title": "spooled"})
        assert (pixel.status, await pixel.read()) == (200, pages.GIF)
        token = links.sign(contact_id=CONTACT, url=TARGET, keys=settings.link_keys, now=sent)
        click = await http.get(f"{url}/c/{token}", headers=PERSON, allow_redirects=False)
        assert (click.status, click.headers["Location"]) == (302, TARGET)
        token = links.sign(contact_id=CONTACT, purpose="open", keys=settings.link_keys, now=sent)
        email_open = await http.get(f"{url}/o/{token}.gif", headers=PERSON)
        assert (email_open.status, await email_open.read()) == (200, pages.GIF)  # always the GIF
        # what must not be spooled: an unsubscribe and a CRM upsert are refused, to be retried
        token = links.sign(
            contact_id=CONTACT, purpose="unsubscribe", keys=settings.link_keys, now=sent
        )
        one_click = await http.post(
            f"{url}/u/{token}",
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status == 503 and one_click.headers["Retry-After"]
        upsert = await http.post(
            f"{url}/v1/contacts",
            json={"source": "crm", "contacts": [{"email": "ann@initech.io"}]},
            headers={"Authorization": f"Bearer {CRM_KEY}"},
        )
        assert upsert.status == 503 and upsert.headers["Retry-After"]

        up = time.monotonic()
        await asyncio.to_thread(broker.start)
        back = time.monotonic()
        await load.until(lambda: load.count(200, since=back) >= 20, 60, "200s after restart")
        assert (await http.get(f"{url}/readyz")).status == 200
        await spooled_records_arrive(settings)
    finally:
        load.running = False
        await asyncio.gather(*clients)
        await http.close()
        broker_errors = collector.metrics.registry.get_sample_value("ma_broker_errors_total")
        await runner.cleanup()

    during = [a for a in load.answers if a.started >= down and a.finished < up]
    assert during, "no request was answered while the broker was down"
    assert {a.status for a in during} == {503}  # never a 200 that is not durable
    assert all(a.retry_after for a in load.answers if a.status == 503)
    assert {a.status for a in load.answers} <= {200, 503}
    assert broker_errors is not None and broker_errors >= 1

    on_topic = {m.value["event_id"] for m in await read_topic(settings, "events")}
    missing = load.acknowledged() - on_topic
    assert not missing, f"{len(missing)} acknowledged event(s) are not on ma.events"
