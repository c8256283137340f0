"""The collector's producing path (pipeline.kafka): records of concurrent requests merged into
one batch per partition, keyed records partitioned exactly as aiokafka's default partitioner
does, and a request that gives up never failing the others sharing its batch.

A fake aiokafka producer stands in for the broker: like aiokafka, it queues at most one batch per
partition (``send_batch`` waits until the sender took the queued one), and the test decides when
the sender drains a batch and when the broker acknowledges it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka import BrokerUnavailable, JsonProducer, PartitionBatches, partition_for
from pipeline.settings import Settings


class FakeBuilder:
    """aiokafka's ``BatchBuilder``: takes records until closed or full (the first always fits)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes]] = []
        self.closed = False

    def append(self, *, timestamp: Any, key: bytes, value: bytes) -> object | None:
        if self.closed:
            return None
        if self.records and len(self.records) >= self.capacity:
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Queues one batch per partition; ``drain`` is the sender taking them, ``ack`` the broker."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.queued: dict[tuple[str, int], tuple[FakeBuilder, asyncio.Future[Any]]] = {}
        self.sent: list[tuple[FakeBuilder, asyncio.Future[Any]]] = []
        self.delivered: list[tuple[int, bytes]] = []  # (partition, key) of acknowledged records
        self.taken = asyncio.Event()

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def send_batch(
        self, builder: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        while (topic, partition) in self.queued:
            self.taken.clear()
            await self.taken.wait()
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued[(topic, partition)] = (builder, delivered)
        return delivered

    def drain(self) -> list[FakeBuilder]:
        batches = list(self.queued.values())
        for (_, partition), (builder, _) in self.queued.items():
            self.delivered += [(partition, key) for key, _ in builder.records]
        self.queued.clear()
        self.sent += batches
        self.taken.set()
        for builder, _ in batches:
            builder.close()  # aiokafka builds the batch: nothing more gets in
        return [builder for builder, _ in batches]

    def ack(self, error: Exception | None = None) -> None:
        for _, delivered in self.sent:
            if error is None:
                delivered.set_result(None)
            else:
                delivered.set_exception(error)
        self.sent.clear()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_records_of_concurrent_sends_share_one_batch_per_partition() -> None:
    producer = FakeProducer()
    batches = PartitionBatches(producer)  # type: ignore[arg-type]
    first = batches.add("t", 0, b"a", b"1")
    await settle()  # handed over at once: the partition's queue was free
    later = [batches.add("t", 0, b"b", b"2"), batches.add("t", 0, b"c", b"3")]
    other = batches.add("t", 1, b"d", b"4")
    await settle()
    assert [b.records for b in producer.drain()] == [[(b"a", b"1")], [(b"d", b"4")]]
    await settle()  # the queue is free again: the records that waited go together
    assert [b.records for b in producer.drain()] == [[(b"b", b"2"), (b"c", b"3")]]
    assert later[0] is later[1]
    producer.ack()
    await settle()
    assert all(f.done() and f.exception() is None for f in [first, *later, other])


async def test_a_batch_handed_over_takes_no_more_records() -> None:
    producer = FakeProducer()
    batches = PartitionBatches(producer)  # type: ignore[arg-type]
    first = batches.add("t", 0, b"a", b"1")
    await settle()
    second = batches.add("t", 0, b"b", b"2")
    assert second is not first
    assert producer.queued[("t", 0)][0].records == [(b"a", b"1")]


async def test_a_full_batch_is_followed_by_another_in_order() -> None:
    producer = FakeProducer(capacity=2)
    batches = PartitionBatches(producer)  # type: ignore[arg-type]
    batches.add("t", 0, b"a", b"1")
    await settle()
    for key in (b"b", b"c", b"d"):
        batches.add("t", 0, key, b"")
    drained: list[list[bytes]] = []
    for _ in range(3):
        drained += [[k for k, _ in b.records] for b in producer.drain()]
        await settle()
    assert drained == [[b"a"], [b"b", b"c"], [b"d"]]


async def test_a_failed_batch_fails_every_send_that_shares_it_and_only_those() -> None:
    producer = FakeProducer()
    batches = PartitionBatches(producer)  # type: ignore[arg-type]
    lost = [batches.add("t", 0, b"a", b"1"), batches.add("t", 0, b"b", b"2")]
    await settle()
    producer.drain()
    producer.ack(KafkaTimeoutError())
    kept = batches.add("t", 0, b"c", b"3")
    await settle()
    producer.drain()
    producer.ack()
    await settle()
    assert all(isinstance(f.exception(), KafkaTimeoutError) for f in lost)
    assert kept.exception() is None


async def test_abandoned_batches_fail_instead_of_hanging() -> None:
    producer = FakeProducer()
    batches = PartitionBatches(producer)  # type: ignore[arg-type]
    batches.add("t", 0, b"a", b"1")
    await settle()
    waiting = batches.add("t", 0, b"b", b"2")  # waits for the queue to be free
    batches.abandon()
    await settle()
    assert waiting.done() and waiting.exception() is not None


# -- JsonProducer.send_all over the batches -------------------------------------------------
class FakeCluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


class FakeClient:
    cluster = FakeCluster()


async def started_producer(fake: FakeProducer, ack_timeout: float = 5.0) -> JsonProducer:
    """A ``JsonProducer`` whose aiokafka producer is ``fake`` (the real one is never started)."""
    producer = JsonProducer(Settings(kafka_bootstrap="127.0.0.1:1"), ack_timeout=ack_timeout)
    await producer._producer.stop()
    fake.client = FakeClient()  # type: ignore[attr-defined]
    producer._producer = fake  # type: ignore[assignment]
    producer._batches = PartitionBatches(fake)  # type: ignore[arg-type]
    producer._started = True
    return producer


async def acknowledge_all(fake: FakeProducer) -> None:
    while True:
        await settle()
        if fake.drain():
            fake.ack()


async def test_send_all_returns_once_every_record_is_acknowledged() -> None:
    fake = FakeProducer()
    producer = await started_producer(fake)
    broker = asyncio.create_task(acknowledge_all(fake))
    try:
        records = [("t", f"key-{i}".encode(), b"v") for i in range(50)]
        await asyncio.gather(producer.send_all(records), producer.send_all(records[:7]))
    finally:
        broker.cancel()
    expected = [(partition_for(key, [0, 1, 2, 3]), key) for _, key, _ in records + records[:7]]
    assert sorted(fake.delivered) == sorted(expected)


async def test_a_send_that_times_out_leaves_the_shared_batch_to_the_others() -> None:
    fake = FakeProducer()
    producer = await started_producer(fake, ack_timeout=0.05)
    patient = await started_producer(fake, ack_timeout=5)
    patient._batches = producer._batches  # the same open batches, as one producer's sends share
    impatient = asyncio.create_task(producer.send_all([("t", b"k", b"1")]))
    waiting = asyncio.create_task(patient.send_all([("t", b"k", b"2")]))
    await settle()
    fake.drain()
    with pytest.raises(BrokerUnavailable):
        await impatient
    fake.ack()
    await waiting  # acknowledged: the other send's timeout cancelled nothing it shares


async def test_a_record_over_the_request_size_is_refused_before_sending() -> None:
    fake = FakeProducer()
    producer = await started_producer(fake)
    with pytest.raises(BrokerUnavailable, match="max_request_size"):
        await producer.send_all([("t", b"k", b"x" * (3 * 1024 * 1024))])
    assert not fake.queued


# -- partitioning ------------------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(key=st.binary(max_size=80), count=st.integers(min_value=1, max_value=64))
def test_keyed_records_go_where_aiokafkas_default_partitioner_puts_them(
    key: bytes, count: int
) -> None:
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


async def test_the_producer_waits_for_all_replicas_and_is_idempotent() -> None:
    """A ``200`` means every in-sync replica has the event, and a retried send is not written
    twice (CONTRACT section 2: ``acks=all``)."""
    producer = JsonProducer(Settings())._producer

    assert producer._sender._acks == -1  # "all"
    assert producer._txn_manager is not None  # idempotence: producer id and sequence numbers
