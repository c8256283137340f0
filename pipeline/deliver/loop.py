"""Webhook delivery of triggers: ``ma.triggers`` → each matching destination, at least once.

A plain aiokafka consumer in its own group (``<MA_APP_ID>-deliver``). Each trigger read becomes
one job per destination that wants it (``Destination.wants``); each destination has its own
queue and its own senders (``CONCURRENCY``), so a slow or dead receiver never delays another.
Every attempt is a record on ``ma.deliveries`` (``Delivery``), written before the next step:

- delivered (2xx) or dead (a redirect, another 4xx, or ``retry_for`` passed; also a record on
  ``ma.dead-letter``): the job is done;
- retrying (408, 429, 5xx, timeout, connection error): the job waits ``retry_delay`` (or what
  ``Retry-After`` asks) in the destination's schedule, then tries again, same ``webhook-id``.

A trigger's offset is committed only once every job it made is done (the committed offset of a
partition is its oldest unfinished trigger). On a start, the ``ma.deliveries`` records of the
last ``retry_for`` (the longest) say what each re-read trigger already got: delivered and dead
jobs are not made again, a retrying one resumes at its ``next_attempt_at`` with its attempt
count and first attempt time. So pending retries survive a restart and ``kill -9``; an attempt
whose record did not reach Kafka before a crash is made again (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline import codec
from pipeline.clock import Clock, to_millis
from pipeline.deliver.attempt import Outcome, attempt, retry_delay, secret_problem
from pipeline.models.dead_letter import dead_letter_value
from pipeline.rules import RulesWatcher
from pipeline.rules.models import Destination
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: concurrent attempts per destination
CONCURRENCY = 4
#: triggers read but not done before the consumer waits
MAX_OUTSTANDING = 10_000
COMMIT_EVERY = 1.0


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.attempts = Counter(
            "ma_deliveries",
            "webhook delivery attempts by destination and status (delivered, retrying, dead)",
            ["destination", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            "ma_delivery_seconds", "time of one attempt", ["destination"], registry=r
        )
        self.pending = Gauge(
            "ma_delivery_pending", "jobs queued or waiting to retry", ["destination"], registry=r
        )


@dataclass(order=True)
class Job:
    due: float  # loop time of the next attempt
    trigger_id: str = field(compare=False)
    destination: str = field(compare=False)
    body: bytes = field(compare=False)
    tp: TopicPartition = field(compare=False)
    offset: int = field(compare=False)
    attempt: int = field(default=1, compare=False)
    first_ms: int | None = field(default=None, compare=False)  # the first attempt's time


@dataclass
class _Past:
    """What ``ma.deliveries`` says a (trigger, destination) got before this start."""

    status: str
    attempt: int
    first_ms: int
    next_ms: int | None


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        rules: RulesWatcher,
        clock: Clock,
        registry: CollectorRegistry,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock
        self.metrics = DeliveryMetrics(registry)
        self.group = f"{settings.app_id}-deliver"
        self.triggers_topic = settings.topic("triggers")
        self.deliveries_topic = settings.topic("deliveries")
        self.dead_letter_topic = settings.topic("dead-letter")
        self._own_producer = producer is None
        self.producer = producer or AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True
        )
        self._queues: dict[str, asyncio.Queue[Job]] = {}
        self._waiting: dict[str, list[Job]] = defaultdict(list)  # per destination: a heap
        self._wake: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._tasks: list[asyncio.Task[None]] = []
        self._outstanding: dict[TopicPartition, dict[int, int]] = defaultdict(dict)
        self._read_to: dict[TopicPartition, int] = {}
        self._past: dict[tuple[str, str], _Past] = {}
        self.ready = asyncio.Event()

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled."""
        if self._own_producer:
            await self.producer.start()
        consumer = AIOKafkaConsumer(
            self.triggers_topic,
            bootstrap_servers=self.settings.bootstrap,
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        async with aiohttp.ClientSession() as http:
            self.http = http
            try:
                await self._recall()
                await consumer.start()
                log.info("delivering %s as group %s", self.triggers_topic, self.group)
                self.ready.set()
                self._tasks.append(asyncio.ensure_future(self._commit_loop(consumer)))
                while True:
                    await self._read(consumer)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await consumer.stop()
                if self._own_producer:
                    await self.producer.stop()

    def _destinations(self) -> dict[str, Destination]:
        return {d.id: d for d in self.rules.rules.destinations}

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        if sum(len(o) for o in self._outstanding.values()) >= MAX_OUTSTANDING:
            await asyncio.sleep(0.1)
            return
        batch = await consumer.getmany(timeout_ms=500, max_records=1000)
        destinations = self._destinations()
        for tp, records in batch.items():
            for record in records:
                self._read_to[tp] = record.offset + 1
                try:
                    trigger = codec.loads(record.value) if record.value else None
                    if not isinstance(trigger, dict):
                        continue
                    rule, channel = trigger.get("rule"), trigger.get("channel")
                    trigger_id = str(trigger["trigger_id"])
                except (ValueError, KeyError) as exc:
                    log.warning("deliver: a record on %s is not a trigger: %s", tp, exc)
                    continue
                for destination in destinations.values():
                    if destination.wants(str(rule), str(channel)):
                        self._start(destination, trigger_id, record.value, tp, record.offset)

    def _start(
        self,
        destination: Destination,
        trigger_id: str,
        body: bytes,
        tp: TopicPartition,
        offset: int,
    ) -> None:
        past = self._past.pop((trigger_id, destination.id), None)
        if past is not None and past.status in ("delivered", "dead"):
            return  # done before this start
        loop = asyncio.get_running_loop()
        job = Job(loop.time(), trigger_id, destination.id, body, tp, offset)
        if past is not None:  # retrying: resume where it was
            job.attempt, job.first_ms = past.attempt + 1, past.first_ms
            if past.next_ms is not None:
                job.due = loop.time() + max(past.next_ms - to_millis(self.clock.now()), 0) / 1000
        waiting = self._outstanding[tp]
        waiting[offset] = waiting.get(offset, 0) + 1
        self._schedule(job)

    def _schedule(self, job: Job) -> None:
        destination = job.destination
        if destination not in self._queues:
            self._queues[destination] = asyncio.Queue()
            self._tasks.append(asyncio.ensure_future(self._timer(destination)))
            for _ in range(CONCURRENCY):
                self._tasks.append(asyncio.ensure_future(self._sender(destination)))
        heapq.heappush(self._waiting[destination], job)
        self._wake[destination].set()
        self.metrics.pending.labels(destination).inc()

    async def _timer(self, destination: str) -> None:
        """Moves the destination's jobs to its queue when their time comes."""
        loop = asyncio.get_running_loop()
        waiting, wake, queue = (
            self._waiting[destination],
            self._wake[destination],
            self._queues[destination],
        )
        while True:
            while waiting and waiting[0].due <= loop.time():
                queue.put_nowait(heapq.heappop(waiting))
            wake.clear()
            timeout = waiting[0].due - loop.time() if waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _sender(self, destination_id: str) -> None:
        queue = self._queues[destination_id]
        while True:
            job = await queue.get()
            try:
                await self._attempt(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # never lose the job: try again later
                log.exception("deliver: attempt of %s to %s failed", job.trigger_id, destination_id)
                job.due = asyncio.get_running_loop().time() + 5
                heapq.heappush(self._waiting[destination_id], job)
                self._wake[destination_id].set()

    async def _attempt(self, job: Job) -> None:
        destination = self._destinations().get(job.destination)
        now = self.clock.now()
        now_ms = to_millis(now)
        job.first_ms = job.first_ms if job.first_ms is not None else now_ms
        if destination is None:
            outcome = Outcome("dead", None, "the destination was removed from the rules file")
        else:
            secret = os.environ.get(destination.secret_env) or ""
            problem = secret_problem(secret) if secret else "is not set"
            if problem is not None:  # no attempt can succeed: dead now, not retried for ever
                outcome = Outcome("dead", None, f"{destination.secret_env} {problem}")
            else:
                started = asyncio.get_running_loop().time()
                outcome = await attempt(
                    self.http, destination, secret, job.trigger_id, job.body, now
                )
                self.metrics.seconds.labels(job.destination).observe(
                    asyncio.get_running_loop().time() - started
                )
        status = outcome.kind
        next_at: datetime | None = None
        if outcome.kind == "retry" and destination is not None:
            delay = retry_delay(job.attempt, destination.backoff)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            next_at = now + timedelta(seconds=delay)
            if to_millis(next_at) - job.first_ms > destination.retry_for.total_seconds() * 1000:
                status, next_at = "dead", None
                outcome = Outcome(
                    "dead",
                    outcome.http_status,
                    f"{outcome.error}; still failing after retry_for ({destination.retry_for})",
                )
        recorded = "retrying" if status == "retry" else status
        delivery = {
            "trigger_id": job.trigger_id,
            "destination": job.destination,
            "attempt": job.attempt,
            "status": recorded,
            "http_status": outcome.http_status,
            "error": outcome.error,
            "at": now,
            "next_attempt_at": next_at,
        }
        sends = [
            await self.producer.send(
                self.deliveries_topic, codec.dumps(delivery), key=job.trigger_id.encode()
            )
        ]
        if recorded == "dead":
            error = f"webhook to {job.destination} failed: {outcome.error}"
            payload = codec.loads(job.body)
            dead = dead_letter_value(now, f"deliver:{job.destination}", error, payload)
            sends.append(await self.producer.send(self.dead_letter_topic, codec.dumps(dead)))
            log.warning(
                "deliver: %s to %s is dead: %s", job.trigger_id, job.destination, outcome.error
            )
        await asyncio.gather(*sends)
        self.metrics.attempts.labels(job.destination, recorded).inc()
        self.metrics.pending.labels(job.destination).dec()
        if recorded == "retrying" and next_at is not None:
            job.attempt += 1
            job.due = asyncio.get_running_loop().time() + (next_at - now).total_seconds()
            heapq.heappush(self._waiting[job.destination], job)
            self._wake[job.destination].set()
            self.metrics.pending.labels(job.destination).inc()
        else:
            self._done(job)

    def _done(self, job: Job) -> None:
        waiting = self._outstanding[job.tp]
        left = waiting.get(job.offset, 0) - 1
        if left > 0:
            waiting[job.offset] = left
        else:
            waiting.pop(job.offset, None)

    # -- offsets ------------------------------------------------------------------------------
    async def _commit_loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY)
            offsets = {}
            for tp, read_to in self._read_to.items():
                waiting = self._outstanding.get(tp)
                offsets[tp] = min(waiting) if waiting else read_to
            assigned = consumer.assignment()
            offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
            if not offsets:
                continue
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                log.info("deliver: commit skipped during a rebalance: %s", exc)

    # -- what was done before this start ---------------------------------------------------------
    async def _recall(self) -> None:
        """Read the ``ma.deliveries`` records of the last ``retry_for`` (+ an hour)."""
        longest = max(
            (d.retry_for for d in self.rules.rules.destinations), default=timedelta(hours=24)
        )
        since = to_millis(self.clock.now() - longest - timedelta(hours=1))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.deliveries_topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.deliveries_topic) or set()
            tps = [TopicPartition(self.deliveries_topic, p) for p in partitions]
            if not tps:
                return
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times({tp: since for tp in tps})
            for tp in tps:
                found = starts.get(tp)
                if found is None:
                    consumer.seek(tp, ends[tp])
                else:
                    consumer.seek(tp, found.offset)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._remember(codec.loads(record.value))
        finally:
            await consumer.stop()
        log.info("deliver: %d deliveries recalled from %s", len(self._past), self.deliveries_topic)

    def _remember(self, delivery: dict[str, Any]) -> None:
        key = (str(delivery["trigger_id"]), str(delivery["destination"]))
        at = to_millis(datetime.fromisoformat(str(delivery["at"]).replace("Z", "+00:00")))
        nxt = delivery.get("next_attempt_at")
        next_ms = (
            to_millis(datetime.fromisoformat(str(nxt).replace("Z", "+00:00"))) if nxt else None
        )
        past = self._past.get(key)
        first = min(at, past.first_ms) if past is not None else at
        if past is None or int(delivery["attempt"]) >= past.attempt:
            self._past[key] = _Past(
                str(delivery["status"]), int(delivery["attempt"]), first, next_ms
            )
        else:
            past.first_ms = first
