"""The ClickHouse sink's loop: a plain aiokafka consumer of what the stages produce.

It reads ``x.contact-work`` and ``x.anonymous-events`` (events), ``ma.identities``,
``ma.contacts``, ``ma.scores`` and ``ma.triggers`` in large batches with ``getmany`` (stage 1's
envelopes of hand-overs, ``pipeline.worker.handover``, taken message by message), writes each
batch with ``SinkWriter`` and only then commits its offsets, in a consumer group of its own
(``<app id>-sink``). It keeps no state, so it runs beside the worker's Faust agents (``MA_SINK``,
the default, and ``ma-pipeline run``) or in a process of its own (``ma-pipeline sink``,
``pipeline.sink.main``), as many as the topics have partitions with a ClickHouse server.

Exactly once in ClickHouse, whatever happens to the process: a batch is committed only after
``write`` returned, so a crash or a rebalance replays it, and the writer adds nothing for rows
already stored (see ``pipeline.sink.writer``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from pipeline import codec
from pipeline.clock import Clock
from pipeline.models.dead_letter import dead_letter_value
from pipeline.settings import Settings
from pipeline.sink.metrics import SinkMetrics
from pipeline.sink.rows import rows_for
from pipeline.sink.writer import SinkWriter
from pipeline.topics import SINK_INPUTS
from pipeline.worker.handover import hand_overs

log = logging.getLogger(__name__)

#: the largest batch, and how long to gather one before writing what arrived
BATCH = 10_000
WITHIN = 1.0

#: the dead letters' ``source``
SOURCE = "sink"


class SinkLoop:
    """Consume the sink's topics and write them to ClickHouse until cancelled.

    ``producer()`` gives the aiokafka producer that sends dead letters (a record that cannot
    become rows), before the batch's offsets are committed.
    """

    def __init__(
        self,
        settings: Settings,
        writer: SinkWriter,
        metrics: SinkMetrics,
        producer: Callable[[], AIOKafkaProducer],
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.topics = [settings.topic(name) for name in SINK_INPUTS]
        self.group = f"{settings.app_id}-sink"
        self.writer = writer
        self.metrics = metrics
        self.producer = producer
        self.clock = clock
        self.prefix = len(settings.topic_prefix)
        self.dead_letter_topic = settings.topic("dead-letter")

    def consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=self.group,
            client_id=f"{self.settings.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self.writer))
        return consumer

    async def run(self) -> None:
        consumer = self.consumer()
        await consumer.start()
        log.info("sink consuming %s as group %s", ", ".join(self.topics), self.group)
        try:
            while True:
                records = await self.gather(consumer)
                if not records:
                    continue
                erasures = await self.write(records)
                if erasures:
                    records += await self.catch_up(consumer, erasures)
                    for erasure in erasures:
                        await self.writer.erase(erasure)
                        self.metrics.erasures.inc()
                await self.commit(consumer, records)
        finally:
            await consumer.stop()

    async def catch_up(self, consumer: AIOKafkaConsumer, erasures: list[Any]) -> list[Any]:
        """Write every record already on the sink's topics before erasing.

        The contact agent asks for an erasure only after the contact's earlier outputs were
        acknowledged, but those wait on other topics (``ma.scores``, ``ma.identities``, …) that
        this consumer may not have reached yet: written after the erasure, they would bring
        the person back. So the erasure waits until every assigned partition is read up to
        its end offset as of now. Returns the records written meanwhile (to commit with it).
        """
        ends = await consumer.end_offsets(list(consumer.assignment()))
        written: list[Any] = []

        async def behind() -> bool:
            assigned = consumer.assignment()
            for tp, end in ends.items():
                if tp in assigned and await consumer.position(tp) < end:
                    return True
            return False

        while await behind():
            records = await self.gather(consumer)
            if records:
                erasures += await self.write(records)
                written += records
        return written

    async def gather(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """Records until ``BATCH`` of them or ``WITHIN`` seconds after the first arrived."""
        loop = asyncio.get_running_loop()
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < BATCH:
            left = 1.0 if deadline is None else deadline - loop.time()
            if left <= 0:
                break
            got = await consumer.getmany(
                timeout_ms=max(int(left * 1000), 1), max_records=BATCH - len(records)
            )
            for batch in got.values():
                records += batch
            if records and deadline is None:
                deadline = loop.time() + WITHIN
        return records

    async def write(self, records: list[Any]) -> list[dict[str, Any]]:
        """Write the rows of ``records``; return the erasure requests among them."""
        rows: list[tuple[str, tuple[Any, ...]]] = []
        erasures: list[dict[str, Any]] = []
        dead: list[bytes] = []
        spans: dict[tuple[str, int], list[int]] = {}
        for record in records:
            span = spans.setdefault((record.topic, record.partition), [record.offset] * 2)
            span[0], span[1] = min(span[0], record.offset), max(span[1], record.offset)
            topic = record.topic[self.prefix :]
            try:
                value = codec.loads(record.value) if record.value else None
                if value is not None and value.get("k") == "erase":
                    erasures.append(value)
                    continue
                pairs = hand_overs(value)  # stage 1's envelope (pipeline.worker.handover)
                if pairs is None:
                    rows += rows_for(topic, value)
                    continue
                for _, item in pairs:
                    try:
                        rows += rows_for(topic, item)
                    except Exception as exc:
                        dead.append(self._dead_letter(exc, codec.dumps(item)))
            except Exception as exc:
                dead.append(self._dead_letter(exc, record.value))
        batch_id = ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(spans.items()))
        loop = asyncio.get_running_loop()
        started = loop.time()
        written = await self.writer.write(rows, batch_id)
        self.metrics.seconds.observe(loop.time() - started)
        for table, count in written.items():
            self.metrics.rows.labels(table).inc(count)
        if dead:
            producer = self.producer()
            sent = [await producer.send(self.dead_letter_topic, value) for value in dead]
            await asyncio.gather(*sent)
        self.metrics.records.inc(len(records))
        return erasures

    def _dead_letter(self, exc: BaseException, payload: bytes | None) -> bytes:
        log.error("sink: %s: %s", type(exc).__name__, exc)
        self.metrics.dead_letters.inc()
        try:
            decoded: Any = codec.loads(payload) if payload else None
        except ValueError:
            decoded = (payload or b"").decode("utf-8", errors="replace")
        error = f"{type(exc).__name__}: {exc}"
        return codec.dumps(dead_letter_value(self.clock.now(), SOURCE, error, decoded))

    async def commit(self, consumer: AIOKafkaConsumer, records: list[Any]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partitions moved while the batch was written: their new owner replays it,
            # and the writer adds nothing twice.
            log.info("sink commit skipped after a rebalance: %s", exc)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions that another sink process wrote until now: their stored keys are loaded again
    before the next insert (``SinkWriter.forget_stored``)."""

    def __init__(self, writer: SinkWriter) -> None:
        self.writer = writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.writer.forget_stored()
