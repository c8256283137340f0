"""The one way the pipeline's own processes produce to Kafka outside Faust: durable JSON.

``acks=all`` with the idempotent producer; ``send_all`` returns only once the broker has
acknowledged every record, and raises ``BrokerUnavailable`` when it does not within the timeout
(the collector answers ``503`` then).

Records with a key are partitioned as aiokafka's default partitioner does (murmur2 of the key,
like the Java client) and merged, across every concurrent ``send_all``, into one batch per
partition (``PartitionBatches``): what aiokafka's own accumulator does for ``send()``, but with
one future per batch instead of one per record (the collector's hot path).

After an outage, records that timed out leave gaps in the idempotent producer's sequence
numbers; the broker then refuses every later batch (``OutOfOrderSequenceNumber``) and aiokafka
does not recover by itself. ``JsonProducer`` replaces its producer (a new producer id) when that
happens, so sends succeed again once the broker is back.

Example::

    producer = JsonProducer(settings)
    await producer.start()
    await producer.send_all([(settings.topic("events"), key, value_bytes)])
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from pipeline import codec
from pipeline.logs import quiet
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]

#: The producer's idempotence state no longer matches the broker's: only a new producer helps.
_STALE_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


class JsonProducer:
    """A started-once aiokafka producer with durable, batched sends."""

    def __init__(
        self,
        settings: Settings,
        *,
        ack_timeout: float = 5.0,
        linger_ms: int = 2,
        client_id: str = "ma-pipeline",
    ) -> None:
        self.settings = settings
        self.ack_timeout = ack_timeout
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "max_request_size": 2 * 1024 * 1024,
            "compression_type": None,
            "request_timeout_ms": int(ack_timeout * 1000) + 5000,
            "retry_backoff_ms": 100,
        }
        #: Records up to this size (key and value) are below any batch overhead of the limit.
        self._max_plain_record = self._options["max_request_size"] - 1024
        self._producer = AIOKafkaProducer(**self._options)
        self._batches = PartitionBatches(self._producer)
        self._started = False
        self._replacing: asyncio.Lock | None = None
        self._retired: set[asyncio.Task[None]] = set()
        #: How many times a stale producer was replaced (for logs and tests).
        self.replacements = 0

    async def start(self, give_up_after: float | None = None) -> None:
        """Connect, retrying until the broker answers (a collector may start before Kafka);
        with ``give_up_after`` seconds, raise ``BrokerUnavailable`` instead of waiting longer."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after is None else loop.time() + give_up_after
        delay = 0.5
        # a command (``give_up_after``) reports an unreachable broker in one line: neither
        # aiokafka's error logs nor our retries are printed; a service logs each retry
        retried = log.warning if give_up_after is None else log.debug
        while True:
            try:
                with contextlib.nullcontext() if give_up_after is None else quiet("aiokafka"):
                    await self._producer.start()
                self._started = True
                return
            except KafkaError as exc:
                if deadline is not None and loop.time() > deadline:
                    await _stop_quietly(self._producer, 1)
                    raise BrokerUnavailable(
                        f"cannot reach the Kafka broker at {self.settings.bootstrap} ({exc}); "
                        "start it with `ma-pipeline broker start` (or `make run`), or set "
                        "MA_KAFKA_BOOTSTRAP"
                    ) from exc
                retried("broker %s not reachable yet (%s); retrying", self.settings.bootstrap, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._batches.flush(self.ack_timeout)
            await self._producer.stop()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    async def send_all(self, records: Iterable[Record]) -> None:
        """Send records and wait until every one is acknowledged (``acks=all``)."""
        if not self._started:
            raise BrokerUnavailable("not connected to the broker yet")
        producer, batches = self._producer, self._batches
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        waits: set[asyncio.Future[Any]] = set()
        try:
            partitions: dict[str, list[int]] = {}
            for topic, key, value in records:
                if key is None:  # a random partition: aiokafka's own choice
                    async with asyncio.timeout_at(deadline):
                        sent = await producer.send(topic, value=value, key=None)
                    sent.add_done_callback(_retrieve)
                    waits.add(sent)
                    continue
                if len(key) + len(value) > self._max_plain_record:
                    self._check_size(key, value)
                if topic not in partitions:
                    partitions[topic] = await _partitions(producer, topic, deadline)
                partition = partition_for(key, partitions[topic])
                waits.add(batches.add(topic, partition, key, value))
            # Other sends share these batches: wait without ever cancelling them.
            await _all_done(waits, deadline)
            _raise_first_failure(waits)
        except _STALE_PRODUCER as exc:
            await self._replace(producer)
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    def _check_size(self, key: bytes, value: bytes) -> None:
        """Refuse a record over ``max_request_size`` as aiokafka's ``send()`` does: the broker
        would refuse its whole batch (and the producer's sequence numbers with it)."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > self._options["max_request_size"]:
            raise MessageSizeTooLargeError(
                f"the record is {size} bytes, over max_request_size "
                f"({self._options['max_request_size']} bytes)"
            )

    async def _replace(self, stale: AIOKafkaProducer) -> None:
        """Start a new producer in place of ``stale`` (once, however many sends saw it fail)."""
        self._replacing = self._replacing or asyncio.Lock()
        async with self._replacing:
            if self._producer is not stale or not self._started:
                return  # another send replaced it already, or we are stopping
            fresh = AIOKafkaProducer(**self._options)
            try:
                async with asyncio.timeout(self.ack_timeout + 5):
                    await fresh.start()
            except (TimeoutError, KafkaError) as exc:
                log.warning("could not start a new producer yet (%s); the next send retries", exc)
                await _stop_quietly(fresh, self.ack_timeout)
                return
            stale_batches = self._batches
            self._producer, self._batches = fresh, PartitionBatches(fresh)
            self.replacements += 1
            log.warning(
                "the broker refused the producer's sequence numbers (records timed out during an "
                "outage); replaced it with a new producer"
            )
            task = asyncio.create_task(_retire(stale, stale_batches, self.ack_timeout))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def send_json(self, topic: str, key: str | None, value: Any) -> None:
        """Send one JSON value durably."""
        await self.send_all([(topic, key.encode() if key else None, codec.dumps(value))])

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when a metadata request to the broker succeeds now."""
        if not self._started:
            return False
        try:
            async with asyncio.timeout(timeout):
                # False when no broker answered; the cluster still lists the brokers it knew.
                updated = await self._producer.client.force_metadata_update()
            return bool(updated) and bool(self._producer.client.cluster.brokers())
        except (TimeoutError, KafkaError):
            return False


async def _retire(producer: AIOKafkaProducer, batches: PartitionBatches, timeout: float) -> None:
    """Stop a replaced producer; batches still waiting for it fail (their sends answer 503)."""
    await _stop_quietly(producer, timeout)
    batches.abandon()


async def _stop_quietly(producer: AIOKafkaProducer, timeout: float) -> None:
    """Stop a producer that is being given up on; its unsent records were already refused."""
    try:
        async with asyncio.timeout(timeout):
            await producer.stop()
    except (TimeoutError, KafkaError) as exc:
        log.debug("a replaced producer did not stop cleanly: %s", exc)


# -- batching ------------------------------------------------------------------------------
@dataclass
class _Batch:
    """An aiokafka batch being filled, and the future its records' senders wait on."""

    builder: Any  # aiokafka.producer.message_accumulator.BatchBuilder
    delivered: asyncio.Future[None]


class PartitionBatches:
    """One filling batch per partition, shared by every concurrent ``send_all``.

    aiokafka queues at most one batch per partition (``send_batch`` waits until the queued one
    is taken by the sender): a batch per request would go out alone, one per produce request.
    Here records from all requests go into the partition's open batch, which is handed to
    aiokafka as soon as its queue is free, while the next one fills: the merging ``send()``
    gets from aiokafka's accumulator, at the cost of one future per batch, not per record.

    Example::

        delivered = batches.add("ma.events", 3, key, value)
        await delivered  # acknowledged by the broker (acks=all), or a KafkaError
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], deque[_Batch]] = {}
        self._handing: dict[tuple[str, int], asyncio.Task[None]] = {}

    def add(self, topic: str, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Append a record to its partition's open batch; the future settles on delivery."""
        tp = (topic, partition)
        batches = self._open.get(tp)
        if batches is None:
            batches = self._open[tp] = deque()
        elif batches:
            batch = batches[-1]
            if batch.builder.append(timestamp=None, key=key, value=value) is not None:
                return batch.delivered
        # no open batch, or it is full: a new one (its first record always fits)
        batch = _Batch(self._producer.create_batch(), asyncio.get_running_loop().create_future())
        batch.delivered.add_done_callback(_retrieve)
        batch.builder.append(timestamp=None, key=key, value=value)
        batches.append(batch)
        if tp not in self._handing:
            self._handing[tp] = asyncio.create_task(self._hand_over(tp, batches))
        return batch.delivered

    async def _hand_over(self, tp: tuple[str, int], batches: deque[_Batch]) -> None:
        """Give the partition's batches to aiokafka in order, each once its queue is free."""
        topic, partition = tp
        try:
            while batches:
                batch = batches[0]
                try:
                    # Until this returns, the batch is ours and keeps taking records.
                    sent = await self._producer.send_batch(
                        batch.builder, topic, partition=partition
                    )
                except asyncio.CancelledError:
                    _fail(batches, ProducerClosed())
                    raise
                except Exception as exc:  # every sender of the batch gets it
                    batches.popleft().builder.close()
                    _settle(batch.delivered, exc)
                    continue
                # Queued: aiokafka takes it at its next drain, so nothing may be added now.
                batches.popleft().builder.close()
                sent.add_done_callback(functools.partial(_delivered, batch.delivered))
        finally:
            del self._handing[tp]

    async def flush(self, timeout: float) -> None:
        """Hand every open batch to aiokafka (before stopping the producer, which flushes it)."""
        if self._handing:
            await asyncio.wait(list(self._handing.values()), timeout=timeout)
        self.abandon()

    def abandon(self) -> None:
        """Fail what was not handed over (the producer is gone)."""
        for task in list(self._handing.values()):
            task.cancel()
        for batches in self._open.values():
            _fail(batches, ProducerClosed())


async def _all_done(futures: set[asyncio.Future[Any]], deadline: float) -> None:
    """Return once all ``futures`` are done; raise ``TimeoutError`` at ``deadline`` (loop time)
    and leave them alone, as other sends share them. ``asyncio.wait`` under ``asyncio.timeout``,
    leaner: one future and one timer of its own (the collector's hot path, once per request)."""
    pending = len(futures)
    if not pending:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def one_done(_: asyncio.Future[Any]) -> None:
        nonlocal pending
        pending -= 1
        if not pending and not done.done():
            done.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    timer = loop.call_at(deadline, _expire, done)
    try:
        await done
    finally:
        timer.cancel()


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


def _raise_first_failure(futures: set[asyncio.Future[Any]]) -> None:
    """Raise a failure of the (done) futures, a stale producer's first: it must be replaced."""
    failures: list[BaseException] = []
    for future in futures:
        if future.cancelled():
            failures.append(ProducerClosed())
        elif (exc := future.exception()) is not None:
            failures.append(exc)
    for failure in failures:
        if isinstance(failure, _STALE_PRODUCER):
            raise failure
    if failures:
        raise failures[0]


def _delivered(delivered: asyncio.Future[None], sent: asyncio.Future[Any]) -> None:
    _settle(delivered, None if sent.cancelled() else sent.exception() or None)


def _settle(delivered: asyncio.Future[None], exc: BaseException | None) -> None:
    if delivered.done():
        return
    if exc is None:
        delivered.set_result(None)
    else:
        delivered.set_exception(exc)


def _fail(batches: deque[_Batch], exc: KafkaError) -> None:
    while batches:
        batch = batches.popleft()
        batch.builder.close()
        _settle(batch.delivered, exc)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: the senders that waited for it may have given up already."""
    if not future.cancelled():
        future.exception()


# -- partitioning ----------------------------------------------------------------------------
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@functools.lru_cache(maxsize=256)
def _words(count: int) -> Callable[[bytes], tuple[int, ...]]:
    """Reads ``count`` little-endian 32-bit words (murmur2's blocks)."""
    return struct.Struct(f"<{count}I").unpack_from


@functools.lru_cache(maxsize=16384)
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, as aiokafka's ``DefaultPartitioner`` (and the Java client)
    computes it, about twice as fast; recent keys (a browser's cookie) are remembered."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in _words(length >> 2)(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        i = length - tail
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


async def _partitions(producer: AIOKafkaProducer, topic: str, deadline: float) -> list[int]:
    """The topic's partitions, sorted; from the metadata at hand, else once it is fetched (until
    ``deadline``, loop time)."""
    known = producer.client.cluster.partitions_for_topic(topic)
    if not known:
        async with asyncio.timeout_at(deadline):
            known = await producer.partitions_for(topic)
    return sorted(known)


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition of a keyed record: ``DefaultPartitioner``'s choice (``partitions`` sorted)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
