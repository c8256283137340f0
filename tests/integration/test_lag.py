"""``ma-pipeline lag``: what the worker's consumer groups have not yet committed, on the real
broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from click.testing import CliRunner

from pipeline import codec
from pipeline.cli import main
from pipeline.lag import worker_groups
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


def lag_table(settings: Settings) -> dict[tuple[str, str], int]:
    env = {
        "MA_KAFKA_BOOTSTRAP": settings.bootstrap,
        "MA_TOPIC_PREFIX": settings.topic_prefix,
        "MA_APP_ID": settings.app_id,
    }
    result = CliRunner().invoke(main, ["lag"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["group", "topic", "lag"]
    return {(group, topic): int(n) for group, topic, n in (row.split() for row in rows)}


async def test_lag_counts_each_groups_uncommitted_records(topics: Settings) -> None:
    events, app, sink = topics.topic("events"), topics.app_id, f"{topics.app_id}-sink"
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(7):
            await producer.send_and_wait(events, codec.dumps({"n": i}), key=f"aid-{i}".encode())
    finally:
        await producer.stop()

    table = await asyncio.to_thread(lag_table, topics)
    assert table[app, events] == 7  # the worker has committed nothing yet
    assert table[app, topics.topic("contact-updates")] == 0
    assert table[sink, topics.topic("scores")] == 0
    assert {group for group, _ in table} == {app, sink}

    # the worker's group commits all but the last record of each partition
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap, group_id=app)
    await consumer.start()
    try:
        partitions = [TopicPartition(events, p) for p in range(topics.topic_partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(
            {tp: OffsetAndMetadata(end - 1, "") for tp, end in ends.items() if end}
        )
    finally:
        await consumer.stop()
    table = await asyncio.to_thread(lag_table, topics)
    assert table[app, events] == sum(1 for end in ends.values() if end)


def test_lag_says_when_the_broker_cannot_be_reached(settings: Settings) -> None:
    env = {"MA_KAFKA_BOOTSTRAP": "127.0.0.1:9", "MA_APP_ID": settings.app_id}
    result = CliRunner().invoke(main, ["lag"], env=env)
    assert result.exit_code == 1
    assert "reading lag from 127.0.0.1:9 failed" in result.output


def test_a_worker_without_its_sink_has_no_sink_group(settings: Settings) -> None:
    assert set(worker_groups(settings)) == {settings.app_id, f"{settings.app_id}-sink"}
    without = settings.model_copy(update={"sink": False})
    assert set(worker_groups(without)) == {settings.app_id}
