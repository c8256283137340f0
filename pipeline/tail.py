"""``ma-pipeline tail TOPIC`` and ``triggers tail``: a topic's records as they arrive, decoded.

No consumer group (nothing is committed, no other reader is disturbed): every partition of the
topic is read from its end (records from now on) or from its beginning (``--from-beginning``),
and each record is printed as soon as it is read: ``tail`` one JSON document per line (the
record's value; a tombstone as ``{"key": …, "deleted": true}``), ``triggers tail`` one readable
line per trigger (CONTRACT §7): fired_at, rule, channel, subject (email, else anonymous_id,
else contact_id), trigger_id.

Example::

    async for value in follow(settings, "triggers", from_beginning=True, limit=10):
        print(trigger_line(value))
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import codec
from pipeline.logs import quiet
from pipeline.settings import Settings
from pipeline.topics import all_topics, topic_name


class UnknownTopic(Exception):
    """No such topic on the broker; the message lists the pipeline's topics."""


def full_name(settings: Settings, topic: str) -> str:
    """A pipeline topic's full name from its short one (``triggers`` → ``ma.triggers``); a name
    that already is a full name is kept."""
    for spec in all_topics():
        if topic in (spec.name, topic_name(settings, spec)):
            return topic_name(settings, spec)
    return topic


async def follow(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    idle: float | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> AsyncIterator[Any]:
    """Yield the decoded records of ``topic`` (a tombstone as ``{"key", "deleted"}``), from now
    on or from the beginning, until ``limit`` records, or ``idle`` seconds without one;
    ``on_ready(full name)`` once every partition is positioned."""
    name = full_name(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        with quiet("aiokafka"):  # unreachable: one line (pipeline.errors), not its error log
            await consumer.start()
        partitions = consumer.partitions_for_topic(name) or await _partitions(consumer, name)
        if not partitions:
            known = ", ".join(topic_name(settings, spec) for spec in all_topics() if spec.public)
            raise UnknownTopic(f"no topic {name} on {settings.bootstrap}; the pipeline's: {known}")
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # positioned now: what comes later is shown
        if on_ready is not None:
            on_ready(name)
        seen = 0
        loop = asyncio.get_running_loop()
        last = loop.time()
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=500)
            records = sorted(
                (r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.offset)
            )
            if not records and idle is not None and loop.time() - last > idle:
                return
            for record in records:
                last = loop.time()
                yield _decoded(record.key, record.value)
                seen += 1
                if limit is not None and seen >= limit:
                    return
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int] | None:
    await consumer._client.force_metadata_update()
    partitions: set[int] | None = consumer.partitions_for_topic(name)
    return partitions


def _decoded(key: bytes | None, value: bytes | None) -> Any:
    text_key = key.decode("utf-8", errors="replace") if key is not None else None
    if value is None:
        return {"key": text_key, "deleted": True}
    try:
        return codec.loads(value)
    except ValueError:
        return {"key": text_key, "text": value.decode("utf-8", errors="replace")}


def trigger_line(trigger: dict[str, Any]) -> str:
    """One trigger, readable: fired_at, rule, channel, subject, trigger_id."""
    subject = trigger.get("email") or trigger.get("anonymous_id") or trigger.get("contact_id")
    return "  ".join(
        str(part)
        for part in (
            trigger.get("fired_at"),
            trigger.get("rule"),
            trigger.get("channel"),
            subject or "-",
            trigger.get("trigger_id"),
        )
    )
