"""The broker goes away while the worker is in the middle of a backlog, and comes back: the
worker keeps running, catches up, and its identities and final scores are those of a run
without the outage; every event reaches ClickHouse once. Its log says what happened without
repeating it several times a second.

Runs its own broker (the session's one must stay up for the other tests).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.broker import LocalBroker
from pipeline.settings import Settings
from tests.conftest import REPO, free_port
from tests.integration.worker.conftest import open_stack
from tests.integration.worker.test_recovery import (
    START,
    outcome,
    produce,
    uninterrupted,
    workload,
)

pytestmark = pytest.mark.integration

OUTAGE = 10.0  # seconds: past the worker's 10 s session timeout, so its groups rejoin
BACKLOG = 3000  # page views of other visitors first: the worker is busy when the broker goes


def backlog(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Anonymous page views of many cookies, before the workload's time."""
    rng = random.Random(seed)
    cookies = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(300)]
    return [
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": "page_view",
            "site_id": "acme",
            "source": "browser",
            "received_at": START - timedelta(hours=2) + timedelta(seconds=i),
            "anonymous_id": rng.choice(cookies),
            "url": "https://www.acme.example/blog/b",
            "path": "/blog/b",
        }
        for i in range(n)
    ]


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[LocalBroker]:
    port = free_port()
    broker = LocalBroker(
        Settings(
            data_dir=tmp_path / "broker",
            cache_dir=REPO / ".cache",
            broker_port=port,
            broker_controller_port=free_port(),
            broker_heap="384m",
        )
    )
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


async def test_the_worker_rides_out_a_broker_outage_mid_stream(
    kafka_bootstrap: str, own_broker: LocalBroker, tmp_path: Path
) -> None:
    events = backlog(BACKLOG) + workload(seed=11)
    expected = await uninterrupted(kafka_bootstrap, tmp_path / "clean", "rocksdb://", events)
    async with open_stack(own_broker.bootstrap, tmp_path / "outage", "rocksdb://") as stack:
        half = BACKLOG + (len(events) - BACKLOG) // 2
        await produce(stack, events[:half])
        assert sum((await stack.lag()).values()) > 0  # the worker is in the middle of it
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(OUTAGE)
        assert stack.worker.popen.poll() is None, stack.worker.text()[-4000:]
        await asyncio.to_thread(own_broker.start)
        await produce(stack, events[half:])

        got = await outcome(stack, len(events))
        [[rows, ids]] = await stack.query("SELECT count(), uniqExact(event_id) FROM {db}.events")
        assert stack.worker.popen.poll() is None  # it never gave up
        # aiokafka's retries are summarised, not logged several times a second per connection
        assert 0 < stack.worker.text().count("Unable connect to node") < 10

    assert len(expected[0]) > 10  # the workload does link and re-link
    assert got == expected
    assert rows == ids == len(events)
