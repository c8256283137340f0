"""``pipeline.worker.produce`` on the real broker: each record lands in the partition aiokafka's
own ``send`` gives its key, a key's records keep their order, and ``wait`` names the offset of
each partition's last record (what the worker records as a table's persisted changelog offset).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.settings import Settings
from pipeline.topics import TopicSpec, ensure_topics
from pipeline.worker.produce import produce, wait

pytestmark = pytest.mark.integration


async def read_all(settings: Settings, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += records
    finally:
        await consumer.stop()
    return got


async def test_records_land_where_send_puts_them_in_order(settings: Settings) -> None:
    specs = [TopicSpec(f"{name}-{uuid.uuid4().hex[:6]}", "key", "test", public=False)
             for name in ("produce", "probe")]  # fmt: skip
    await ensure_topics(settings, specs)
    topic, probe_topic = (settings.topic(s.name) for s in specs)
    # ~700 KB in all: some partitions need more than one 512 KB batch
    records: list[tuple[str, bytes | None, bytes | None]] = [
        (topic, f"key-{i % 37}".encode(), f'{{"n":{i},"pad":"{"x" * 1000}"}}'.encode())
        for i in range(700)
    ]
    records.append((topic, None, b'{"keyless":true}'))
    keys = {key for _, key, _ in records if key is not None}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        sent = await produce(producer, records)
        last = await wait(sent)
        send_puts = {  # where aiokafka's own send() puts each key
            key: (await (await producer.send(probe_topic, b"probe", key=key))).partition
            for key in keys
        }
    finally:
        await producer.stop()

    got = await read_all(settings, topic, len(records))
    assert len(got) == len(records) and sum(s.count for s in sent) == len(records)
    assert {r.key: r.partition for r in got if r.key is not None} == send_puts
    in_log_order = sorted(got, key=lambda r: (r.partition, r.offset))
    for key in keys:
        assert [r.value for r in in_log_order if r.key == key] == [
            value for _, k, value in records if k == key
        ]
    ends: dict[tuple[str, int], int] = {}
    for r in got:
        ends[(topic, r.partition)] = max(ends.get((topic, r.partition), -1), r.offset)
    assert last == ends
