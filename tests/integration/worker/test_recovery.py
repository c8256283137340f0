"""Crash recovery: ``kill -9`` of the worker mid-stream gives the same identities, scores and
trigger ids as an uninterrupted run; pending delayed triggers survive and fire once, on time.
A second worker joining mid-stream (partitions move between them) changes nothing either."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from pipeline import codec, contact_id_for
from pipeline.trigger.decide import trigger_id
from tests.conftest import free_port
from tests.integration.worker.conftest import (
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
    page_view,
    start_worker,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def workload(seed: int = 7, cookies: int = 40) -> list[dict[str, Any]]:
    """Deterministic ma.events values: browsing, identifies, forms, shared-computer re-links."""
    rng = random.Random(seed)
    people = [f"p{i}.{seed}@acme.io" for i in range(25)]
    paths = ["/pricing", "/blog/marketing/a", "/products/x", "/careers", "/blog/b", "/"]
    events = []
    at = START
    for _ in range(cookies):
        aid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for _ in range(rng.randint(4, 14)):
            at += timedelta(seconds=rng.randint(1, 90))
            roll = rng.random()
            base = {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "site_id": "acme",
                "received_at": at,
                "source": "browser",
                "anonymous_id": aid,
            }
            if roll < 0.12:
                events.append({**base, "type": "identify", "email": rng.choice(people)})
            elif roll < 0.2:
                events.append(
                    {
                        **base,
                        "type": "form_submit",
                        "email": rng.choice(people),
                        "form_id": rng.choice(["demo-request", "whitepaper", "newsletter"]),
                    }
                )
            else:
                path = rng.choice(paths)
                events.append(
                    {
                        **base,
                        "type": "page_view",
                        "url": f"https://www.acme.example{path}",
                        "path": path,
                    }
                )
    return events


async def produce(stack: Stack, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for event in events:
            await producer.send(
                stack.settings.topic("events"),
                codec.dumps(event),
                key=event["anonymous_id"].encode(),
            )
        await producer.flush()
    finally:
        await producer.stop()


async def outcome(
    stack: Stack, expected_events: int
) -> tuple[set[tuple[Any, ...]], dict[str, Any]]:
    """All identity decisions, and the final score and stage of every subject."""
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.events HAVING count() >= {n:UInt64}", n=expected_events
        ),
        timeout=90,
    )
    async with stack.reader("identities") as reader:
        await reader.settle(3)
        decisions = {
            (
                d["anonymous_id"],
                d["contact_id"],
                d["previous_contact_id"],
                d["reason"],
                d["event_id"],
            )
            for d in reader.values
        }
    async with stack.reader("scores") as reader:
        await reader.settle(3)
    # the last change of each subject, valued at one common time (scores decay)
    later = START + timedelta(days=30)
    final = {}
    for v in reader.values:
        at = datetime.fromisoformat(v["at"].replace("Z", "+00:00"))
        value = v["score"] * 0.5 ** ((later - at) / timedelta(days=30))
        final[v["contact_id"] or v["anonymous_id"]] = round(value, 1)
    return decisions, final


async def uninterrupted(
    kafka_bootstrap: str, tmp: Path, store: str, events: list[dict[str, Any]]
) -> tuple[set[tuple[Any, ...]], dict[str, Any]]:
    """The ``outcome`` of ``events`` through one worker that runs from start to end."""
    async with open_stack(kafka_bootstrap, tmp, store) as stack:
        await produce(stack, events)
        return await outcome(stack, len(events))


# RocksDB, production's store, outlives the process: what it holds after a kill -9 must never
# be ahead of the outputs that reached Kafka. The memory store recovers from changelogs alone.
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_kill_9_mid_stream_gives_the_same_identities_and_scores(
    kafka_bootstrap: str, tmp_path: Path, store: str
) -> None:
    events = workload()
    expected = await uninterrupted(kafka_bootstrap, tmp_path / "clean", store, events)
    async with open_stack(kafka_bootstrap, tmp_path / "crash", store) as crash:
        half = len(events) // 2
        await produce(crash, events[:half])
        await asyncio.sleep(0.3)  # the worker is in the middle of it
        await asyncio.to_thread(crash.restart_worker, kill=True)
        await produce(crash, events[half:])
        got = await outcome(crash, len(events))
    assert len(expected[0]) > 10  # the workload does link and re-link
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    # Trigger ids are compared in test_order.py, whose events are stamped as a collector would
    # stamp them (now). These are stamped months ago and partly produced after the restarted
    # worker had read all there was: by CONTRACT §3 they are late (older than MA_ORDER_WAIT
    # behind the partitions' watermarks) and applied as they come.
    events_rows = len(events)
    assert events_rows == len({e["event_id"] for e in events})


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_second_worker_joining_mid_stream_gives_the_same_identities_and_scores(
    kafka_bootstrap: str, tmp_path: Path, store: str
) -> None:
    events = workload(seed=11)
    expected = await uninterrupted(kafka_bootstrap, tmp_path / "one", store, events)
    async with open_stack(kafka_bootstrap, tmp_path / "two", store) as two:
        half = len(events) // 2
        await produce(two, events[:half])
        # Same app id: Faust splits the partitions between the two and each recovers the
        # tables of the partitions it takes over. The second writes nothing to ClickHouse (its
        # own embedded one); the first's sink reads every partition of its group.
        settings = two.settings.model_copy(
            update={
                "data_dir": two.tmp / "data-2",
                "worker_web_port": free_port(),
                "sink": False,
            }
        )
        second = await asyncio.to_thread(start_worker, settings, two.tmp / "worker-2.log")
        try:
            await produce(two, events[half:])
            got = await outcome(two, len(events))
            async with aiohttp.ClientSession() as http:  # it did take part
                response = await http.get(f"{settings.worker_api}/debug/consumer")
                state = codec.loads(await response.read())
            assert any(
                tp.startswith(f"{two.settings.topic('events')}:") for tp in state["committed"]
            )
        finally:
            second.stop()
    assert len(expected[0]) > 10
    assert got[0] == expected[0]
    assert got[1] == expected[1]


async def test_pending_delayed_triggers_survive_kill_9_and_fire_once_on_time(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with open_stack(kafka_bootstrap, tmp_path) as stack:
        expected = {}
        for _ in range(3):
            email, aid = new_email("pending"), new_aid()
            contact = str(contact_id_for(email))
            await stack.contacts("crm", {"email": email, "consent_email": True})
            await eventually(
                lambda c=contact: stack.query(
                    "SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String}", c=c
                )
            )
            await stack.send({"type": "identify", "anonymous_id": aid, "email": email})
            view = page_view(aid, "/pricing")
            await stack.send(view)
            expected[trigger_id("pricing-trial-offer", contact, view["event_id"])] = contact
        await asyncio.sleep(2)  # scheduled, due tomorrow
        await asyncio.to_thread(stack.restart_worker, kill=True)
        stack.advance(timedelta(days=1, seconds=1))
        due_at_latest = stack.clock.now()
        async with stack.reader("triggers") as reader:
            await reader.wait_for(
                lambda vs: len([t for t in vs if t["rule"] == "pricing-trial-offer"]) >= 3,
                timeout=40,
            )
            await asyncio.to_thread(stack.restart_worker, kill=False)  # and once more, cleanly
            await reader.settle(4)
        offers = [t for t in reader.values if t["rule"] == "pricing-trial-offer"]
        assert sorted(t["trigger_id"] for t in offers) == sorted(expected)  # once each, same ids
        for offer in offers:
            fired = datetime.fromisoformat(offer["fired_at"].replace("Z", "+00:00"))
            assert fired - due_at_latest < timedelta(seconds=15)
