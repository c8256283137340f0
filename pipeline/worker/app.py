"""The Faust application: topics, tables and thin agents around ``pipeline.worker.steps``.

Topology (every topic has ``MA_TOPIC_PARTITIONS`` partitions, so partition *n* of all of them
lives on the same worker)::

    ma.events ──────────────┐                         ┌─► ma.identities
    ma.x.cookie-commands ───┴─► [stitch]  cookies ────┼─► ma.scores, ma.triggers (anonymous)
                                   │                  └─► ma.contact-updates (form traits)
                                   ▼
                           ma.x.contact-work  (keyed by contact_id)
                                   │
    ma.contact-updates ────────────┴─► [contact]  contacts ─► ma.contacts, ma.scores,
                                                               ma.triggers, ma.identities

    ma.x.contact-work, ma.x.anonymous-events,      ─► [sink]  (plain aiokafka consumer,
    ma.identities, ma.contacts, ma.scores,              group <app id>-sink) ─► ClickHouse
    ma.triggers

Stage 1 sends an event still anonymous (no contact) to ``ma.x.anonymous-events``, which only the
sink reads: stage 2 would have nothing to do with it.

State lives in Faust tables (``MA_STORE``: RocksDB, or memory in tests) changelogged to Kafka
with the key's own partitioner (``pipeline.worker.store``); every topic and changelog is created
before the worker consumes (``pipeline.topics``). Delayed triggers are fired by the stage that
owns the subject's partition: a timer asks the stage's ``DueIndex`` (``pipeline.worker.due``)
which keys are due and fires them under the stage's lock, between two of its batches.

Each agent takes up to ``BATCH`` messages at a time; a batch's outputs and changelog records
are produced together, one batch per partition (``pipeline.worker.produce``), and the batch is
acknowledged only once they are durable (``commit_batch``).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterable
from typing import Any, cast

import faust
from aiohttp import web
from faust.types import TP

from pipeline import codec
from pipeline.clickhouse import ClickHouse, connect
from pipeline.clickhouse.migrate import migrate
from pipeline.clock import Clock, to_millis
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.sink import SinkWriter
from pipeline.topics import (
    ANONYMOUS_EVENTS,
    CONTACT_DUE_TABLE,
    CONTACT_INPUTS,
    CONTACT_WORK,
    CONTACTS_TABLE,
    COOKIE_COMMANDS,
    COOKIE_DUE_TABLE,
    COOKIES_TABLE,
    SINK_INPUTS,
    STITCH_INPUTS,
)
from pipeline.worker.api import make_api
from pipeline.worker.due import DueIndex
from pipeline.worker.faust_fixes import Consumer, TableManager, broker_url
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.order import NEVER, Frontier, wake_time
from pipeline.worker.produce import produce, wait
from pipeline.worker.profiles import SegmentMembership
from pipeline.worker.sink import SinkLoop
from pipeline.worker.steps import (
    ContactRecord,
    CookieRecord,
    Counters,
    Out,
    already_applied,
    check_event,
    check_update,
    contact_receive,
    contact_release,
    cookie_command,
    cookie_step,
    due_step,
    event_time,
    message_time,
    stamp,
)
from pipeline.worker.store import store_url

log = logging.getLogger(__name__)

OUTPUT_TOPICS = (
    "identities",
    "scores",
    "triggers",
    "contacts",
    "contact-updates",
    "dead-letter",
    CONTACT_WORK,
    COOKIE_COMMANDS,
    ANONYMOUS_EVENTS,
)
BATCH = 2_000
BATCH_WITHIN = 0.02  # seconds a batch waits to fill: throughput vs POST→trigger latency
DUE_EVERY = 0.25  # seconds between two looks for due delayed triggers and held records


class Worker:
    """Builds the Faust app for these settings and rules.

    Example::

        worker = Worker(settings, RulesWatcher(settings.config))
        worker.app.main()   # or: await worker.app.start()
    """

    def __init__(
        self,
        settings: Settings,
        rules: RulesWatcher,
        clock: Clock | None = None,
        *,
        web: bool = True,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock or settings.clock()
        self.metrics = WorkerMetrics()
        partitions = settings.topic_partitions
        self.app = faust.App(
            settings.app_id,
            broker=broker_url(settings.bootstrap),
            store=store_url(settings.store),
            datadir=str(settings.data_dir / "worker"),
            topic_partitions=partitions,
            topic_replication_factor=settings.topic_replication,
            table_standby_replicas=0,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=False,  # the worker serves its own small API (pipeline.worker.api)
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
            broker_commit_interval=0.5,
            producer_acks=-1,
            producer_linger_ms=2,
            # Records go out in one batch per partition (pipeline.worker.produce); aiokafka's
            # 16 KB default split a stage's batch into dozens of requests, one after another.
            producer_max_batch_size=512 * 1024,
            # A revocation waits until the agents are done with the batch they hold, as Faust
            # means it to ("some of the agent instances may have already started working on
            # an event. we need to wait for them"): without it a leaving worker's batch wrote
            # state and outputs after the new owner recovered the partition (seen as a lost
            # link decision in test_order's "workers leave" run under CPU load).
            stream_wait_empty=True,
            # Faust stops fetching a partition while a stream's buffer is under pressure and
            # resumes when it drains; around a rebalance a resume can be missed and the
            # partition stalls. Buffers larger than any batch keep that path cold.
            stream_buffer_maxsize=65_536,
            # keeps messages queued during recovery's seek: see pipeline.worker.faust_fixes
            TableManager=TableManager,
            logging_config=None,
        )
        app = self.app

        self._topic_names = {name: settings.topic(name) for name in OUTPUT_TOPICS}
        self._produced = {name: self.metrics.produced.labels(name) for name in OUTPUT_TOPICS}
        self._sending: set[asyncio.Future[None]] = set()
        stitch_in = app.topic(
            *(settings.topic(name) for name in STITCH_INPUTS),
            key_serializer="raw",
            value_serializer="raw",
        )
        contact_in = app.topic(
            *(settings.topic(name) for name in CONTACT_INPUTS),
            key_serializer="raw",
            value_serializer="raw",
        )

        def table(name: str) -> Any:
            return app.Table(
                name,
                default=None,
                partitions=partitions,
                use_partitioner=True,
                key_type=bytes,
                value_type=bytes,
            )

        self.cookies = table(COOKIES_TABLE.name)
        self.contacts = table(CONTACTS_TABLE.name)
        self.cookie_due = table(COOKIE_DUE_TABLE.name)
        self.contact_due = table(CONTACT_DUE_TABLE.name)
        self.due = {
            self.cookie_due: DueIndex(self.cookie_due),
            self.contact_due: DueIndex(self.contact_due),
        }
        # A stage's batch and the firing of its due triggers exclude each other.
        self.stitch_lock = asyncio.Lock()
        self.contact_lock = asyncio.Lock()
        self.cookie_topics = settings.topic(COOKIE_COMMANDS)
        self.events_topic = settings.topic("events")
        self.contact_work_topic = settings.topic(CONTACT_WORK)
        # event-time order (pipeline.worker.order): per partition, (latest received_at, offset)
        # handled by stage 1 (ma.events) and stage 2 (ma.contact-updates); stage 1's claims
        self.order_wait_ms = int(settings.order_wait * 1000)
        self.frontier = Frontier(partitions, self.order_wait_ms)
        self._seen1: dict[int, tuple[int, int]] = {}
        self._seen2: dict[int, tuple[int, int]] = {}
        self._claimed1: dict[str, int] = {}
        self._idle1: set[int] = set()  # partitions stage 1 last claimed idle
        self._claimed_generation = -1  # the group generation stage 1 last sent claims in
        self._metadata_ready = asyncio.Event()
        self._metadata_lock = asyncio.Lock()
        self.updates_topic = settings.topic("contact-updates")

        app.agent(stitch_in, name="stitch")(self._stitch_agent)
        app.agent(contact_in, name="contact")(self._contact_agent)
        self.clickhouse: ClickHouse | None = None
        if settings.sink:
            self.clickhouse = connect(settings)
            self.writer = SinkWriter(self.clickhouse, on_retry=self._sink_retry)
            self.sink = SinkLoop(
                settings, SINK_INPUTS, self.writer, self.metrics, self.dead_letter, self.send
            )
            app.task(self._run_sink)
        self.web = web
        app.task(self._serve_api)
        app.timer(DUE_EVERY, name="due-triggers")(self._fire_due)
        app.timer(1.0, name="rules-reload")(self._reload_rules)
        self.membership = SegmentMembership()
        if settings.sink:
            app.timer(settings.segment_refresh, name="segment-membership")(self._refresh_segments)

    # -- plumbing ---------------------------------------------------------------------------
    def emit(self, outs: Iterable[Out], pending: list[Any] | None = None) -> None:
        """Queue records for ``drain(pending)``; without ``pending`` they are sent at once.

        Outputs go straight to the app's aiokafka producer (partitioned by key, exactly as
        Faust would), not through Faust's producer buffer: that buffer hands records on one
        ``await`` at a time and pauses every stream while it holds more than 100, which made
        producing a third of the worker's time. Table changelogs go out the same way
        (``send_changelog``).
        """
        records = pending if pending is not None else []
        produced = self._produced
        topics = self._topic_names
        for out in outs:
            value = codec.dumps(out.value) if out.value is not None else None
            key = out.key.encode() if out.key is not None else None
            if out.partition is None:
                records.append((topics[out.topic], key, value))
            else:
                records.append((topics[out.topic], key, value, out.partition))
            produced[out.topic].inc()
        if pending is None and records:
            task = asyncio.ensure_future(self.drain(records))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def send(self, records: list[Any]) -> None:
        """Produce ``(topic, key, value)`` records and wait for the broker's acknowledgement."""
        if not records:
            return
        sent = await produce(self._producer(), records)
        records.clear()
        await wait(sent)

    def _producer(self) -> Any:
        return self.app.producer._ensure_producer()  # type: ignore[attr-defined]

    async def drain(self, pending: list[Any]) -> None:
        """Wait until every record produced so far — ``pending`` outputs and table changelogs
        — is acknowledged by the broker. Called before a batch is acknowledged, so that a
        crash can only ever replay input, never lose output (at-least-once).

        Faust's own ``producer.flush()`` may return while its send buffer still holds records
        (it gives up after 0.1 s without progress), hence the explicit wait.
        """
        await self.send(pending)
        buffer = self.app.producer.buffer
        loop = asyncio.get_running_loop()
        started = loop.time()
        warned = False
        while buffer.size:
            await asyncio.sleep(0.001)
            if not warned and loop.time() - started > 10:
                warned = True
                log.warning("producer buffer still holds %d records after 10 s", buffer.size)
        await asyncio.sleep(0)  # a changelog record the buffer just handed on reaches aiokafka
        await self.app.producer.flush()

    def dead_letter(
        self,
        source: str,
        exc: BaseException,
        payload: bytes | None,
        pending: list[Any] | None = None,
    ) -> None:
        log.error(
            "%s: %s", source, "".join(traceback.format_exception_only(exc)).strip(), exc_info=exc
        )
        try:
            decoded: Any = codec.loads(payload) if payload else None
        except ValueError:
            decoded = (payload or b"")[:65536].decode("utf-8", errors="replace")
        self.emit(
            [
                Out(
                    "dead-letter",
                    None,
                    {
                        "received_at": self.clock.now(),
                        "source": source,
                        "error": f"{type(exc).__name__}: {exc}",
                        "payload": decoded,
                    },
                )
            ],
            pending,
        )
        self.metrics.dead_letters.labels(source).inc()

    # Table keys are bytes, exactly as the topic keys, so the partitioner agrees with the topics.
    def load(self, table: Any, key: str) -> Any:
        """The decoded state of ``key`` in ``table``, or None."""
        raw = table.data.get(key.encode())
        return codec.loads(raw) if raw is not None else None

    def write(self, states: list[tuple[Any, Any, str, Any, int | None]]) -> list[Any]:
        """Write a batch's new state: ``(table, due_table, key, state, wake time)`` per touched
        key, ``state`` None to delete it, the wake time when the key next needs its stage
        (a held record or a delayed trigger; ``pipeline.worker.due``). Returns the changelog
        records to produce, ``(table, key, value)``.

        Each key is written once per batch. This is what ``table[key] = value`` does, minus
        Faust's per-key changelog path (a future, a trip through its producer buffer and a
        persisted-offset write per record): ``send_changelog`` produces them together.
        """
        changelog: list[Any] = []
        for table, due_table, key, state, wake in states:
            encoded = key.encode()
            raw = codec.dumps(state) if state is not None else None
            table.data.put(encoded, raw)
            changelog.append((table, encoded, raw))
            changelog += self.due[due_table].set(encoded, wake)
        return changelog

    async def send_changelog(self, changelog: list[Any]) -> None:
        """Produce table changelog records ``(table, key, value)`` and wait for the broker;
        then record in each table's store the changelog offset it now holds (what Faust's
        recovery reads from on a restart: the store is current up to there)."""
        if not changelog:
            return
        tables = {table.changelog_topic.get_topic_name(): table for table, _, _ in changelog}
        topic_of = {table: topic for topic, table in tables.items()}
        sent = await produce(
            self._producer(), [(topic_of[table], key, value) for table, key, value in changelog]
        )
        for (topic, partition), offset in (await wait(sent)).items():
            tables[topic].data.set_persisted_offset(TP(topic, partition), offset)

    async def commit_batch(
        self, pending: list[Any], states: list[tuple[Any, Any, str, Any, int | None]]
    ) -> None:
        """Make a batch's effects durable in the order that keeps a crash harmless.

        1. Outputs first: wait until the broker acknowledged every record the batch produced.
        2. Then state: write each touched key once (its changelog record) and wait for that.
        Only then does the agent acknowledge the batch. A crash before (2) replays the batch
        from the old state and produces the same outputs again (duplicates, never losses); a
        crash after (2) replays events the state has seen, which are skipped as duplicates.
        """
        await self.drain(pending)
        await self.send_changelog(self.write(states))

    def _count(self, counters: Counters) -> None:
        for name, n in counters.values.items():
            self.metrics.decisions.labels(name).inc(n)

    # -- stage 1 ------------------------------------------------------------------------------
    async def _ensure_metadata(self) -> None:
        """Load partition metadata of every topic this worker writes, before the first write.

        Tables use the key's partitioner, which Faust evaluates synchronously from the
        producer's metadata: a changelog topic not yet in it would fail the first write.
        """
        if self._metadata_ready.is_set():
            return
        async with self._metadata_lock:
            if self._metadata_ready.is_set():
                return
            producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
            tables = (self.cookies, self.contacts, self.cookie_due, self.contact_due)
            names = [t.changelog_topic.get_topic_name() for t in tables]
            names += [self.settings.topic(name) for name in OUTPUT_TOPICS]
            for name in names:
                await producer.client._wait_on_metadata(name)
            self._metadata_ready.set()

    async def _stitch_agent(self, stream: Any) -> None:
        await self._ensure_metadata()
        async for batch in stream.take_events(BATCH, within=BATCH_WITHIN):
            async with self.stitch_lock:
                await self._stitch_batch(batch)

    async def _stitch_batch(self, batch: list[Any]) -> None:
        # Partitions last claimed idle get new events: say so before deciding them (stage 2
        # counts an idle partition as caught up until it hears otherwise).
        woken = {e.message.partition for e in batch if e.message.topic == self.events_topic}
        if woken & self._idle1:
            busy: list[Any] = []
            self.emit(self._watermarks(busy=woken), busy)
            await self.send(busy)
        rules = self.rules.rules
        counters = Counters()
        pending: list[Any] = []
        records: dict[str, CookieRecord] = {}

        def cookie(key: str, records: dict[str, CookieRecord] = records) -> CookieRecord:
            record = records.get(key)
            if record is None:
                record = records[key] = CookieRecord.from_dict(self.load(self.cookies, key))
            return record

        for event in batch:
            message = event.message
            try:
                key = message.key.decode() if message.key else None
                value = codec.loads(message.value)
                if message.topic == self.cookie_topics:
                    if key is None:
                        raise ValueError("cookie command without a key")
                    record = cookie(key)
                    if already_applied(
                        record.offsets, message.topic, message.partition, message.offset
                    ):
                        counters.add("replayed")
                        continue
                    if value.get("k") == "due":
                        self.emit(
                            due_step(record, rules, int(value["at"]), counters, anonymous_id=key),
                            pending,
                        )
                    else:
                        cookie_command(record, value)
                    continue
                aid = check_event(value).get("anonymous_id")
                here = (message.partition, message.offset)
                self._seen1[message.partition] = (
                    max(self._seen1.get(message.partition, (NEVER, -1))[0], event_time(value)),
                    message.offset,
                )
                if aid is None:  # no cookie: nothing to remember per key
                    self.emit(
                        stamp(cookie_step(CookieRecord(), value, rules, counters), *here),
                        pending,
                    )
                    continue
                record = cookie(aid)
                if already_applied(
                    record.offsets, message.topic, message.partition, message.offset
                ):
                    counters.add("replayed")
                    continue
                self.emit(stamp(cookie_step(record, value, rules, counters), *here), pending)
            except Exception as exc:
                self.dead_letter("worker:stitch", exc, message.value, pending)
        self.emit(self._watermarks(), pending)  # after the hand-overs they cover
        await self.commit_batch(
            pending,
            [
                (self.cookies, self.cookie_due, key, record.to_dict(), record.triggers.next_due())
                for key, record in records.items()
            ],
        )
        self.metrics.processed.labels("stitch").inc(len(batch))
        self._count(counters)

    # -- stage 2 ------------------------------------------------------------------------------
    async def _contact_agent(self, stream: Any) -> None:
        await self._ensure_metadata()
        async for batch in stream.take_events(BATCH, within=BATCH_WITHIN):
            async with self.contact_lock:
                await self._contact_batch(batch)

    async def _contact_batch(self, batch: list[Any]) -> None:
        """Take a batch in (``contact_receive``: deduplicated, held in each contact's inbox),
        then release what the frontier has passed (``pipeline.worker.order``)."""
        rules = self.rules.rules
        counters = Counters()
        pending: list[Any] = []
        records: dict[str, ContactRecord] = {}
        wall = asyncio.get_running_loop().time()
        for event in batch:
            message = event.message
            try:
                key = message.key.decode() if message.key else None
                value = codec.loads(message.value)
                source = 0
                if message.topic == self.updates_topic:
                    self._seen2[message.partition] = (
                        max(
                            self._seen2.get(message.partition, (NEVER, -1))[0],
                            message_time({**value, "k": "update"}) or NEVER,
                        ),
                        message.offset,
                    )
                    if value.get("via") == "worker":
                        continue  # a form's traits: applied from stage 1's hand-over
                    value = {"k": "update", **check_update(value)}
                    source = 1
                elif value.get("k") == "wm":
                    idle = set(value.get("idle") or ())
                    for name, w in value["w"].items():
                        self.frontier.heard(
                            message.partition, name, int(w), idle=name in idle, wall=wall
                        )
                    continue
                elif value.get("k") == "event" and value["e"].get("contact_id") is None:
                    continue  # anonymous, from before x.anonymous-events: for the sink
                elif value.get("k") == "erase":
                    continue  # for the sink
                if key is None:
                    raise ValueError("contact-work message without a key")
                record = records.get(key) or ContactRecord.from_dict(
                    key, self.load(self.contacts, key)
                )
                records[key] = record
                if already_applied(
                    record.offsets, message.topic, message.partition, message.offset
                ):
                    counters.add("replayed")
                    continue
                if value.get("k") == "due":
                    continue  # a tick of an older version: due times are kept per key now
                contact_receive(record, value, source, message.offset, counters)
            except Exception as exc:
                self.dead_letter("worker:contact", exc, message.value, pending)
        await self._release(records, rules, counters, pending)
        await self.commit_batch(pending, self._contact_states(records))
        self.metrics.processed.labels("contact").inc(len(batch))
        self._count(counters)

    async def _release(
        self,
        records: dict[str, ContactRecord],
        rules: Any,
        counters: Counters,
        pending: list[Any],
    ) -> None:
        """Release each contact's held records and due triggers the frontier has passed: the
        contacts of this batch, and those whose wake time the frontier reached."""
        now = to_millis(self.clock.now())
        wall = asyncio.get_running_loop().time()
        owned = self._owned2()
        self.frontier.assigned(owned, wall)
        limits = {}
        for q in owned:
            # this partition's own ma.contact-updates is one of its sources
            seen = self._seen2.get(q)
            w = seen[0] if seen is not None else NEVER
            idle = self._caught_up(TP(self.updates_topic, q), seen)
            self.frontier.heard(q, "u", w, idle=idle, wall=wall)
            limits[q] = self.frontier.value(q, now, wall)
        for raw_key in self.due[self.contact_due].pop_due(lambda q: limits.get(q, NEVER)):
            key = raw_key.decode()
            if key not in records:
                records[key] = ContactRecord.from_dict(key, self.load(self.contacts, key))
        for key, record in records.items():
            q = self.contacts.data.partition_of(key.encode())
            try:
                self.emit(contact_release(record, limits.get(q, NEVER), rules, counters), pending)
            except Exception as exc:
                self.dead_letter("worker:contact", exc, codec.dumps(record.to_dict()), pending)
                record.inbox.clear()

    def _contact_states(
        self, records: dict[str, ContactRecord]
    ) -> list[tuple[Any, Any, str, Any, int | None]]:
        return [
            (
                self.contacts,
                self.contact_due,
                key,
                None if record.erased else record.to_dict(),
                None if record.erased else wake_time(record.inbox, record.triggers.pending),
            )
            for key, record in records.items()
        ]

    # -- order ----------------------------------------------------------------------------------
    def _owned2(self) -> set[int]:
        return {
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.contact_work_topic
        }

    def _caught_up(self, tp: TP, seen: tuple[int, int] | None) -> bool:
        """Has this worker handled everything there is on ``tp`` (as of its last fetch)?
        ``seen``: the offset it last handled there, None if nothing since it got ``tp``."""
        highwater = self.app.consumer.highwater(tp)
        if highwater is None:
            return False
        if seen is not None:
            return seen[1] + 1 >= highwater
        # Nothing handled since the partition was assigned: Faust's read offset is then the
        # committed offset (nothing fetched: caught up if that is the end), or the offset of a
        # message fetched and queued, not handled yet (never the end).
        handed = cast(Consumer, self.app.consumer).handed(tp)
        return highwater == 0 if handed is None else highwater <= handed

    def _watermarks(self, busy: set[int] | frozenset[int] = frozenset()) -> list[Out]:
        """Stage 1's watermarks, one record per ``x.contact-work`` partition (``order``):
        partitions in ``busy`` are about to get new events, whatever was read before."""
        claims: dict[str, int] = {}
        idle: set[int] = set()
        for tp in self.app.consumer.assignment():
            if tp.topic != self.events_topic:
                continue
            seen = self._seen1.get(tp.partition)
            claims[f"e{tp.partition}"] = seen[0] if seen is not None else NEVER
            if tp.partition not in busy and self._caught_up(tp, seen):
                idle.add(tp.partition)
        if not claims:
            return []
        self._claimed1 = claims
        self._idle1 = idle
        value = {"k": "wm", "w": claims, "idle": sorted(f"e{p}" for p in idle)}
        return [
            Out(CONTACT_WORK, None, value, partition=q)
            for q in range(self.settings.topic_partitions)
        ]

    def _changed_claims(self) -> bool:
        """Has a partition stage 1 owns become idle (or new) since its last watermarks?"""
        for tp in self.app.consumer.assignment():
            if tp.topic != self.events_topic:
                continue
            if f"e{tp.partition}" not in self._claimed1:
                return True
            if tp.partition not in self._idle1 and self._caught_up(
                tp, self._seen1.get(tp.partition)
            ):
                return True
        return False

    def _floor(self) -> int:
        return to_millis(self.clock.now()) - self.order_wait_ms

    # -- sink ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the ClickHouse schema (blocking; called before the app starts)."""
        if self.clickhouse is None:
            return []
        database = self.settings.clickhouse_database
        return self.clickhouse.call(lambda c: migrate(c, database))

    def _sink_retry(self, table: str, exc: Exception) -> None:
        self.metrics.sink_retries.labels(table).inc()

    async def _run_sink(self) -> None:
        await self.sink.run()

    async def _serve_api(self) -> None:
        if not self.web:
            return
        runner = web.AppRunner(make_api(self), access_log=None)
        await runner.setup()
        host, port = self.settings.worker_web_host, self.settings.worker_web_port
        await web.TCPSite(runner, host, port).start()
        log.info("worker API on http://%s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    # -- timers -------------------------------------------------------------------------------
    async def _fire_due(self) -> None:
        """What time alone makes happen, in the stage that owns each key.

        Stage 1 sends its watermarks when they changed without a batch (a partition read to its
        end, a rebalance) and fires anonymous delayed triggers up to its own partitions'
        watermarks; stage 2 releases the contacts whose wake time the frontier passed. Each
        under its stage's lock, so between two of its batches, committed as a batch is
        (outputs first, then state). Each stage's
        ``DueIndex`` follows the partitions Faust assigned this worker (tables recovered).
        """
        if self.app.rebalancing or self.app.in_recovery:
            return
        await self._ensure_metadata()
        actives = self.app.assignor.assigned_actives()
        for due_table in (self.cookie_due, self.contact_due):
            changelog = due_table.changelog_topic.get_topic_name()
            self.due[due_table].sync({tp.partition for tp in actives if tp.topic == changelog})
        rules = self.rules.rules
        async with self.stitch_lock:
            pending: list[Any] = []
            counters = Counters()
            generation = self.app.consumer_generation_id
            if generation != self._claimed_generation or self._changed_claims():
                self._claimed_generation = generation  # a rebalance: tell the new owners
                self.emit(self._watermarks(), pending)
            # how far each of its partitions has got: an idle one up to now - MA_ORDER_WAIT
            floor = self._floor()
            claims = {
                f"e{p}": max(w, floor) if p in self._idle1 else w
                for p, w in ((int(name[1:]), w) for name, w in self._claimed1.items())
            }
            states = []
            for raw_key in self.due[self.cookie_due].pop_due(lambda p: claims.get(f"e{p}", NEVER)):
                key = raw_key.decode()
                cookie = CookieRecord.from_dict(self.load(self.cookies, key))
                upto = claims.get(f"e{self.cookies.data.partition_of(raw_key)}", NEVER)
                while (due := cookie.triggers.next_due()) is not None and due <= upto:
                    self.emit(due_step(cookie, rules, due, counters, anonymous_id=key), pending)
                states.append(
                    (
                        self.cookies,
                        self.cookie_due,
                        key,
                        cookie.to_dict(),
                        cookie.triggers.next_due(),
                    )
                )
            await self.commit_batch(pending, states)
            self._count(counters)
        async with self.contact_lock:
            pending = []
            counters = Counters()
            records: dict[str, ContactRecord] = {}
            await self._release(records, rules, counters, pending)
            await self.commit_batch(pending, self._contact_states(records))
            self._count(counters)

    async def _refresh_segments(self) -> None:
        await self.membership.refresh(self)

    async def _reload_rules(self) -> None:
        refusals = self.rules.refusals
        self.rules.poll()
        if self.rules.refusals > refusals:
            self.metrics.rules_refused.inc()
