"""The Faust application: topics, tables and thin agents around ``pipeline.worker.steps``.

Topology (every topic has ``MA_TOPIC_PARTITIONS`` partitions, so partition *n* of all of them
lives on the same worker)::

    ma.events ──────────────┐                         ┌─► ma.identities
    ma.x.cookie-commands ───┴─► [stitch]  cookies ────┼─► ma.scores, ma.triggers (anonymous)
                                   │                  └─► ma.contact-updates (form traits)
                                   ▼
                           ma.x.contact-work  (by contact_id: one record per batch and
                                   │           partition, ``handover``; watermarks)
    ma.contact-updates ────────────┴─► [contact]  contacts ─► ma.contacts, ma.scores,
                                                               ma.triggers, ma.identities

    ma.x.contact-work, ma.x.anonymous-events,      ─► [sink]  (plain aiokafka consumer,
    ma.identities, ma.contacts, ma.scores,              group <app id>-sink) ─► ClickHouse
    ma.triggers

Stage 1 sends an event still anonymous (no contact) to ``ma.x.anonymous-events``, which only the
sink reads: stage 2 would have nothing to do with it.

What each module owns:

- ``stitch`` (``StitchStage``) and ``contact`` (``ContactStage``): a stage each — its table,
  its due index, its lock, how it reads a batch and what time alone makes it do;
- ``steps``: the decisions, pure functions over typed records (also ``pipeline.testing``'s);
- ``commit`` (``Committer``): producing a batch's outputs, then its state, before the batch is
  acknowledged — the order that makes a crash replay, never lose;
- ``handover``: stage 1's hand-overs, one ``x.contact-work`` record per batch and partition;
- ``order``: stage 2's frontier (event-time order), ``due``: when each key next needs its stage;
- ``store``, ``faust_fixes``: the Faust extension points this worker names in its settings;
- this module: the Faust app — tables, agents, timers, the sink task and the API.

State lives in Faust tables (``MA_STORE``: RocksDB, or memory in tests) changelogged to Kafka
with the key's own partitioner (``pipeline.worker.store``); every topic and changelog is created
before the worker consumes (``pipeline.topics``). Delayed triggers are fired by the stage that
owns the subject's partition: a timer asks the stage's ``DueIndex`` (``pipeline.worker.due``)
which keys are due and fires them under the stage's lock, between two of its batches.

Each agent takes up to ``BATCH`` messages at a time (waiting at most ``MA_BATCH_WINDOW`` for them)
and hands them to its stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import faust
from aiohttp import web

from pipeline.clickhouse import ClickHouse, connect
from pipeline.clickhouse.migrate import migrate
from pipeline.clock import Clock
from pipeline.lag import consumer_lag
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.sink.main import build_sink
from pipeline.topics import (
    CONTACT_DUE_TABLE,
    CONTACT_INPUTS,
    CONTACTS_TABLE,
    COOKIE_DUE_TABLE,
    COOKIES_TABLE,
    STITCH_INPUTS,
)
from pipeline.worker.api import make_api
from pipeline.worker.commit import OUTPUT_TOPICS, Ack, Committer
from pipeline.worker.contact import ContactStage
from pipeline.worker.faust_fixes import Monitor, RawSchema, TableManager, broker_url
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.profiles import SegmentMembership
from pipeline.worker.stitch import StitchStage
from pipeline.worker.store import store_url

log = logging.getLogger(__name__)

BATCH = 2_000
DUE_EVERY = 0.05  # seconds between two looks for due delayed triggers and held records
LAG_EVERY = 15.0  # seconds between two measures of consumer lag (an admin request per group)


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
            Monitor=Monitor,  # without per-message statistics: see pipeline.worker.faust_fixes
            logging_config=None,
        )
        app = self.app

        stitch_in = app.topic(*(settings.topic(name) for name in STITCH_INPUTS), schema=RawSchema())
        contact_in = app.topic(
            *(settings.topic(name) for name in CONTACT_INPUTS), schema=RawSchema()
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
        self.committer = Committer(app, settings, self.metrics, self.clock)
        self.stitch = StitchStage(
            app, settings, rules, self.clock, self.committer, self.cookies, self.cookie_due
        )
        self.contact = ContactStage(
            app, settings, rules, self.clock, self.committer, self.contacts, self.contact_due
        )
        self._metadata_ready = asyncio.Event()
        self._metadata_lock = asyncio.Lock()
        self.folder_lock: Any = None  # ``pipeline.errors.DataFolderLock`` of its data folder

        app.agent(stitch_in, name="stitch")(self._stitch_agent)
        app.agent(contact_in, name="contact")(self._contact_agent)
        # The worker reads ClickHouse (queries, segment membership) and, with MA_SINK, writes
        # it; embedded chDB is opened by one process only: without MA_SINK, `ma-pipeline sink`.
        self.clickhouse: ClickHouse | None = None
        if settings.sink or not settings.embedded_clickhouse:
            self.clickhouse = connect(settings)
        if settings.sink and self.clickhouse is not None:
            self.sink = build_sink(
                settings,
                self.clickhouse,
                self.metrics.registry,
                self.committer.producer,
                self.clock,
            )
            app.task(self._run_sink)
        self.web = web
        self.api_listening = asyncio.Event()
        app.task(self._serve_api)
        app.timer(DUE_EVERY, name="due-triggers")(self._fire_due)
        app.timer(1.0, name="rules-reload")(self._reload_rules)
        app.timer(LAG_EVERY, name="gauges")(self._gauges)
        self._rules_hash = self._show_rules_version(None)
        self.membership = SegmentMembership()
        if self.clickhouse is not None:
            app.timer(settings.segment_refresh, name="segment-membership")(self._refresh_segments)

    # -- what the API and profiles read (``profiles.Worker``) --------------------------------
    def refused(self, source: str, error: str) -> None:
        """The dead letter of a request the API refused (a key without the scope it needs)."""
        self.committer.refused(source, error)

    def load(self, table: Any, key: str) -> Any:
        """The decoded state of ``key`` in ``table``, or None."""
        return self.committer.load(table, key)

    def waiting_keys(self) -> list[tuple[Any, list[str]]]:
        """Per table (cookies, contacts), the keys of this worker's partitions that wait for
        their time (a delayed trigger, a held record)."""
        return [
            (self.cookies, [key.decode() for key in self.stitch.due.waiting()]),
            (self.contacts, [key.decode() for key in self.contact.due.waiting()]),
        ]

    def _pending_in(self, key: str, table: Any) -> int:
        return _pending_count(self.load(table, key))

    # -- agents -------------------------------------------------------------------------------
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

    # Each agent acknowledges a batch only once it is durable (``commit``), while it decides
    # the next: Faust's ``noack_take`` leaves the acks to it.
    async def _stitch_agent(self, stream: Any) -> None:
        await self._ensure_metadata()
        async for batch in stream.noack_take(BATCH, within=self.settings.batch_window):
            async with self.stitch.lock:
                await self.stitch.batch(batch, _acknowledge(stream, batch))

    async def _contact_agent(self, stream: Any) -> None:
        await self._ensure_metadata()
        async for batch in stream.noack_take(BATCH, within=self.settings.batch_window):
            async with self.contact.lock:
                await self.contact.batch(batch, _acknowledge(stream, batch))

    # -- sink ---------------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the ClickHouse schema (blocking; called before the app starts)."""
        if self.clickhouse is None:
            return []
        database = self.settings.clickhouse_database
        return self.clickhouse.call(lambda c: migrate(c, database))

    async def _run_sink(self) -> None:
        await self.sink.run()

    async def api_ready(self, timeout: float = 30.0) -> None:
        """Once the API listens (Faust starts its tasks, ``_serve_api`` among them, when the
        app has started, not before: "worker ready" waits for this, so that whoever reads it
        can call the API at once)."""
        if self.web:
            async with asyncio.timeout(timeout):
                await self.api_listening.wait()

    async def _serve_api(self) -> None:
        if not self.web:
            return
        runner = web.AppRunner(make_api(self), access_log=None)
        await runner.setup()
        host, port = self.settings.worker_web_host, self.settings.worker_web_port
        await web.TCPSite(runner, host, port).start()
        self.api_listening.set()
        log.info("worker API on http://%s:%d", host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    # -- timers -------------------------------------------------------------------------------
    async def _fire_due(self) -> None:
        """What time alone makes happen, in the stage that owns each key (``StitchStage`` and
        ``ContactStage.fire_due``), each under its stage's lock, so between two of its
        batches. First each stage's ``DueIndex`` follows the partitions Faust assigned this
        worker (tables recovered)."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        await self._ensure_metadata()
        actives = self.app.assignor.assigned_actives()
        for index in self.committer.due.values():
            changelog = index.table.changelog_topic.get_topic_name()
            index.sync({tp.partition for tp in actives if tp.topic == changelog})
        await self.stitch.fire_due()
        await self.contact.fire_due()

    async def _refresh_segments(self) -> None:
        await self.membership.refresh(self)

    async def _reload_rules(self) -> None:
        refusals = self.rules.refusals
        if self.rules.poll():
            self._rules_hash = self._show_rules_version(self._rules_hash)
        if self.rules.refusals > refusals:
            self.metrics.rules_refused.inc()

    def _show_rules_version(self, previous: str | None) -> str:
        """``ma_rules_version{sha256}`` = 1 for the file in force (its old label removed)."""
        try:
            digest = hashlib.sha256(self.settings.config.read_bytes()).hexdigest()[:16]
        except OSError:
            digest = "unreadable"
        if previous is not None and previous != digest:
            with contextlib.suppress(KeyError):
                self.metrics.rules_version.remove(previous)
        self.metrics.rules_version.labels(digest).set(1)
        return digest

    async def _gauges(self) -> None:
        """Consumer lag per group and topic, and the delayed triggers waiting for their time
        (counted in the state of each key that waits: a few per waiting key)."""
        for table, keys in self.waiting_keys():
            self.metrics.pending.labels(table.name).set(
                sum(map(self._pending_in, keys, [table] * len(keys)))
            )
        try:
            lags = await asyncio.wait_for(consumer_lag(self.settings), LAG_EVERY)
        except Exception as exc:  # the broker is away or busy: the next tick tries again
            log.debug("consumer lag not measured: %s", exc)
            return
        for group, topics in lags.items():
            for topic, lag in topics.items():
                self.metrics.lag.labels(group, topic).set(lag)


def _pending_count(state: Any) -> int:
    triggers = (state or {}).get("triggers") or {}
    return len(triggers.get("pending") or ())


def _acknowledge(stream: Any, batch: list[Any]) -> Ack:
    async def ack() -> None:
        for event in batch:
            await stream.ack(event)

    return ack
