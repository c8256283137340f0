"""Consumer lag: records on the worker's input topics that its consumer groups have not yet
committed, per group and topic. ``ma-pipeline lag`` prints it.

Lag that keeps growing means the workers are not keeping up: add worker processes (up to
``MA_TOPIC_PARTITIONS``) or give them more CPU. The sink's group lags by up to its batch window
(about a second) in normal operation.

Example::

    lags = await consumer_lag(settings)
    lags[settings.app_id]["ma.events"]    # events the worker has yet to process
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from pipeline.settings import Settings
from pipeline.topics import CONTACT_INPUTS, SINK_INPUTS, STITCH_INPUTS


def worker_groups(settings: Settings) -> dict[str, list[str]]:
    """The worker's consumer groups and the topics each reads (the sink's group too unless the
    worker runs without its sink, ``MA_SINK=false``)."""
    groups = {settings.app_id: [settings.topic(t) for t in (*STITCH_INPUTS, *CONTACT_INPUTS)]}
    if settings.sink:
        groups[sink_group(settings)] = [settings.topic(t) for t in SINK_INPUTS]
    return groups


def sink_group(settings: Settings) -> str:
    return f"{settings.app_id}-sink"


async def group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, topics: list[str]
) -> dict[str, int]:
    """Records on each of ``topics`` not yet committed by ``group``: all of them where the group
    committed nothing. Committed offsets are read first, so the end offsets read after them
    include every record the committed ones caused."""
    committed = await _committed(admin, group)
    described = await admin.describe_topics(topics)
    tps = [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic["error_code"] == 0
        for partition in topic["partitions"]
    ]
    lag = dict.fromkeys(topics, 0)
    for tp, end in (await consumer.end_offsets(tps)).items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp.topic] += max(end - done, 0)
    return lag


Offsets = dict[TopicPartition, OffsetAndMetadata]


async def _committed(admin: AIOKafkaAdminClient, group: str, attempts: int = 20) -> Offsets:
    # A broker on which no group ever committed creates its offsets topic on this first
    # request, and answers "coordinator not available" until it has.
    for _ in range(attempts - 1):
        with contextlib.suppress(CoordinatorNotAvailableError):
            return cast(Offsets, await admin.list_consumer_group_offsets(group))
        await asyncio.sleep(0.5)
    return cast(Offsets, await admin.list_consumer_group_offsets(group))


async def consumer_lag(settings: Settings) -> dict[str, dict[str, int]]:
    """``{group: {topic: lag}}`` for the worker's groups (``worker_groups``), and the sink's
    when ``ma-pipeline sink`` runs apart from workers without one (it has committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    try:
        await admin.start()
        await consumer.start()
        groups = worker_groups(settings)
        apart = sink_group(settings)
        if apart not in groups and await _committed(admin, apart):  # ma-pipeline sink
            groups[apart] = [settings.topic(t) for t in SINK_INPUTS]
        return {
            group: await group_lag(admin, consumer, group, topics)
            for group, topics in groups.items()
        }
    finally:
        await consumer.stop()
        await admin.close()
