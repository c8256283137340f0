"""The real local broker: JSON events round-trip, topics are created idempotently, and a
stop/start keeps the data."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline import codec
from pipeline.broker import LocalBroker
from pipeline.settings import Settings
from pipeline.topics import (
    COOKIES_TABLE,
    EVENTS,
    PUBLIC_TOPICS,
    TRIGGERS,
    TopicLayoutError,
    all_topics,
    ensure_topics,
    topic_name,
)
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


async def consume_all(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[object]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[object] = []
    try:
        async with asyncio.timeout(timeout):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    values.extend(codec.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return values


async def test_json_events_round_trip_through_the_broker(topics: Settings) -> None:
    topic = topics.topic("events")
    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    sent = [{"event_id": str(uuid.uuid4()), "type": "page_view", "n": i} for i in range(50)]
    try:
        for value in sent:
            await producer.send(topic, key=b"aid-1", value=codec.dumps(value))
        await producer.flush()
    finally:
        await producer.stop()
    received = await consume_all(topics.bootstrap, topic, len(sent))
    assert received == sent  # one key, one partition: order is kept


async def test_topics_are_created_once_with_the_configured_partitions(settings: Settings) -> None:
    created = await ensure_topics(settings)
    # every topic the pipeline uses, the worker's internal ones and table changelogs included
    assert sorted(created) == sorted(topic_name(settings, t) for t in all_topics())
    assert {settings.topic(t.name) for t in PUBLIC_TOPICS} < set(created)
    assert f"{settings.app_id}-contact-due-changelog" in created
    assert await ensure_topics(settings) == []  # idempotent
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic("events")])
        assert len(described[0]["partitions"]) == settings.topic_partitions
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic("contacts"))]
        )
        entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_new_topics_take_their_first_writes_at_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # ensure_topics returns once the broker serves the new partitions, not only once their
    # leaders are elected: before, the first write to each was refused (NotLeaderForPartition)
    # and retried for a second or more
    created = await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="aiokafka"):
            sent = [
                await producer.send(topic, b"first", key=b"k", partition=partition)
                for topic in created
                for partition in range(settings.topic_partitions)
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    refused = [r.getMessage() for r in caplog.records if "NotLeader" in r.getMessage()]
    assert not refused, refused[:3]


async def test_topics_the_stages_read_together_must_have_the_configured_partitions(
    settings: Settings,
) -> None:
    # made earlier with 2 partitions: the events and a table's changelog
    earlier = settings.model_copy(update={"topic_partitions": 2})
    await ensure_topics(earlier, (EVENTS, COOKIES_TABLE))
    with pytest.raises(TopicLayoutError) as refused:
        await ensure_topics(settings)
    message = str(refused.value)
    assert "\n" not in message
    assert settings.topic("events") in message and "have 2" in message
    assert topic_name(settings, COOKIES_TABLE) in message
    # every existing one has 2: the one setting that makes them agree
    assert message.endswith("set MA_TOPIC_PARTITIONS=2")
    assert await ensure_topics(earlier) != []  # the same layout as they have: fine


async def test_a_public_output_may_have_more_partitions(settings: Settings) -> None:
    # downstream consumers of ma.triggers may want more: nothing of the worker depends on it
    more = settings.model_copy(update={"topic_partitions": settings.topic_partitions * 2})
    await ensure_topics(more, (TRIGGERS,))
    created = await ensure_topics(settings)
    assert settings.topic("triggers") not in created and settings.topic("events") in created


def test_broker_restart_keeps_data_and_status_tells_the_truth(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cache_dir=REPO / ".cache",
        broker_port=free_port(),
        broker_controller_port=free_port(),
        broker_heap="384m",
    )
    broker = LocalBroker(settings)
    assert not broker.status().running
    broker.start()
    try:
        assert broker.status().ready
        asyncio.run(_produce_one(settings, b"kept across restarts"))
        assert broker.stop() is True
        status = broker.status()
        assert not status.running and not status.ready
        broker.start()
        assert broker.status().ready
        values = asyncio.run(_read_raw(settings))
        assert values == [b"kept across restarts"]
    finally:
        broker.stop()
    assert broker.stop() is False  # already stopped: says so, no error


async def _produce_one(settings: Settings, value: bytes) -> None:
    await ensure_topics(settings, (PUBLIC_TOPICS[0],))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("events"), value, key=b"k")
    finally:
        await producer.stop()


async def _read_raw(settings: Settings) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        settings.topic("events"),
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                values = [r.value for records in batch.values() for r in records]
                if values:
                    return values
    finally:
        await consumer.stop()
