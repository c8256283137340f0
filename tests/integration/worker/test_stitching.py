"""Identity stitching and scoring end to end: collector → broker → worker → topics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import contact_id_for, links
from tests.integration.collect.conftest import RunningCollector
from tests.kafka_helpers import TopicReader
from tests.processes import Process

pytestmark = pytest.mark.integration


def view(aid: str, path: str) -> dict[str, object]:
    return {
        "type": "page_view",
        "anonymous_id": aid,
        "event_id": str(uuid.uuid4()),
        "url": f"https://www.acme.example{path}",
    }


async def test_anonymous_visitor_scores_then_links_by_click_and_brings_its_score(
    collector: RunningCollector, worker: Process
) -> None:
    settings = collector.settings
    aid = str(uuid.uuid4())
    response = await collector.post_batch([view(aid, "/pricing"), view(aid, "/pricing/enterprise")])
    assert response.status == 200
    async with TopicReader(settings.bootstrap, settings.topic("scores")) as scores:
        await scores.wait_for(lambda vs: len(vs) >= 2, timeout=60)
        assert scores.values[-1]["anonymous_id"] == aid
        assert scores.values[-1]["score"] == pytest.approx(20, abs=0.01)

        contact = str(contact_id_for("ana.lopez@acme.io"))
        token = links.sign(
            contact_id=contact,
            url="https://www.acme.example/offer",
            campaign_id="spring",
            keys=settings.link_keys,
            now=datetime.now(UTC) - timedelta(minutes=5),
        )
        click = await collector.http.get(
            f"{collector.url}/c/{token}",
            allow_redirects=False,
            headers={
                "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
                "Cookie": f"ma_aid={aid}",
            },
        )
        assert click.status == 302
        assert click.headers["Location"] == "https://www.acme.example/offer"

        values = await scores.wait_for(lambda vs: any(v.get("contact_id") == contact for v in vs))
    moved = [v for v in values if v.get("contact_id") == contact]
    assert moved[0]["rule"] == "anonymous_history"
    assert moved[0]["delta"] == pytest.approx(20, abs=0.01)
    async with TopicReader(settings.bootstrap, settings.topic("identities")) as identities:
        [decision] = await identities.wait_for(lambda vs: len(vs) >= 1)
    assert decision["anonymous_id"] == aid and decision["contact_id"] == contact
    assert decision["previous_contact_id"] is None and decision["reason"] == "email_click"


async def test_events_and_identities_land_in_clickhouse_once(
    collector: RunningCollector, worker: Process
) -> None:
    import asyncio

    from tests.integration.worker.conftest import query

    settings = collector.settings
    db = settings.clickhouse_database
    aid = str(uuid.uuid4())
    events = [
        view(aid, "/pricing"),
        view(aid, "/blog/marketing/a"),
        {
            "type": "identify",
            "anonymous_id": aid,
            "email": "li.wei@acme.io",
            "event_id": str(uuid.uuid4()),
        },
    ]
    await collector.post_batch(events)
    await collector.post_batch(events[:1])  # a duplicate delivery
    contact = str(contact_id_for("li.wei@acme.io"))
    for _ in range(60):  # events and identities arrive in separate sink batches
        rows = await query(
            settings, f"SELECT event_id, contact_id, pre_identification FROM {db}.events"
        )
        history = await query(
            settings,
            f"SELECT event_id FROM {db}.contact_events WHERE contact_id = {{c:String}}",
            c=contact,
        )
        if len(rows) >= 3 and len(history) >= 3:
            break
        await asyncio.sleep(0.5)
    assert sorted(r[0] for r in rows) == sorted(e["event_id"] for e in events)
    assert sorted(r[0] for r in history) == sorted(e["event_id"] for e in events)
    links = await query(settings, f"SELECT anonymous_id, contact_id, reason FROM {db}.identities")
    assert links == [[aid, contact, "identify"]]


async def test_the_worker_api_answers_as_soon_as_the_worker_says_ready(
    collector: RunningCollector, worker: Process
) -> None:
    """ "worker ready" comes once the API listens (it came a few ms before it, and a query
    right after the line was once refused in CI)."""
    import aiohttp

    text = worker.text()
    assert text.index("worker API on") < text.index("worker ready"), text[-2000:]
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{collector.settings.worker_api}/healthz")
        assert response.status == 200
