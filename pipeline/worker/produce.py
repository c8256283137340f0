"""Producing a batch's records together: one ``BatchBuilder`` per topic partition.

The worker produces hundreds of records per input batch (outputs and table changelogs). Handed
to aiokafka one ``send()`` at a time, each record costs a future, a partitioner call and an
accumulator append on the event loop. Grouped by partition into ``create_batch()`` builders and
submitted with ``send_batch``, a partition's records cost one future and one submission.

Records keep their order within a partition (the only order Kafka has), and land in the
partition aiokafka's ``send`` would choose (``pipeline.kafka.partition_for``: the key's murmur2
hash, exactly as Faust's partitioner and Kafka's Java clients); a record without a key goes to
any partition.

Example::

    sent = await produce(producer, [("ma.scores", b"c-1", b"{...}"), ...])
    last = await wait(sent)   # {(topic, partition): offset of its last record}
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.kafka import partition_for

log = logging.getLogger(__name__)

#: topic, key, value (None: a tombstone), and optionally the partition (else the key's)
Record = tuple[str, bytes | None, bytes | None] | tuple[str, bytes | None, bytes | None, int]

_spread = itertools.count()


@dataclass(frozen=True)
class Sent:
    """One submitted batch: where it went, how many records, and its delivery future."""

    topic: str
    partition: int
    count: int
    future: asyncio.Future[Any]


async def produce(producer: AIOKafkaProducer, records: Iterable[Record]) -> list[Sent]:
    """Submit ``records`` grouped per partition; returns at once with their futures."""
    by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    partitions: dict[str, list[int]] = {}
    for topic, key, value, *explicit in records:
        known = partitions.get(topic)
        if known is None:
            known = partitions[topic] = sorted(await producer.partitions_for(topic))
        if explicit:
            partition = explicit[0]
        elif key is None:  # any partition, in turn
            partition = known[next(_spread) % len(known)]
        else:
            partition = partition_for(key, known)
        by_partition.setdefault((topic, partition), []).append((key, value))
    sent: list[Sent] = []
    for (topic, partition), items in by_partition.items():
        batch = producer.create_batch()
        count = 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                sent.append(await _submit(producer, batch, topic, partition, count))
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record for {topic} exceeds the producer's batch size")
            count += 1
        sent.append(await _submit(producer, batch, topic, partition, count))
    return sent


async def _submit(
    producer: AIOKafkaProducer, batch: Any, topic: str, partition: int, count: int
) -> Sent:
    batch.close()
    future = await producer.send_batch(batch, topic, partition=partition)
    return Sent(topic, partition, count, future)


async def wait(sent: list[Sent], *, warn_after: float = 10.0) -> dict[tuple[str, int], int]:
    """Wait until the broker acknowledged every batch (raising a delivery error); return the
    offset of the last record per ``(topic, partition)``."""
    if not sent:
        return {}
    futures = [s.future for s in sent]
    _done, waiting = await asyncio.wait(futures, timeout=warn_after)
    if waiting:
        log.warning(
            "%d of %d batches not acknowledged after %.0f s; still waiting",
            len(waiting),
            len(futures),
            warn_after,
        )
        await asyncio.gather(*waiting)
    last: dict[tuple[str, int], int] = {}
    for s in sent:
        metadata = s.future.result()  # raises a delivery error
        end = metadata.offset + s.count - 1
        last[(s.topic, s.partition)] = max(last.get((s.topic, s.partition), -1), end)
    return last
