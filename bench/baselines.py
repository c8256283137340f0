"""Baselines: what the bare libraries do on this machine, before any pipeline code runs.

- ``kafka.produce``        aiokafka ``send()`` of ~400-byte JSON events, ``acks=all``, idempotent
- ``kafka.produce_batch``  the same through ``create_batch()``/``send_batch()`` per partition
- ``kafka.consume``        aiokafka ``getmany()`` of those messages by a fresh consumer group
- ``clickhouse.insert``    clickhouse-connect inserts into chDB's ``events`` table, 50k-row batches

Later sections report their figures as ratios to these rows. ``realistic_events`` and
``events_table_rows`` are reused by them to feed the pipeline the same traffic.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from clickhouse_connect.driver.client import Client

from bench import BenchContext, Section, Timer, repeat, section
from pipeline.clickhouse import connect
from pipeline.clickhouse.migrate import migrate
from pipeline.topics import TopicSpec, ensure_topics

PARTITIONS = 8
#: Kafka's default is 16 KiB; here 64 KiB and 256 KiB both gave ~2x its send() rate, 1 MiB less.
MAX_BATCH_SIZE = 64 * 1024
CLICKHOUSE_BATCH = 50_000

PAGES = [
    ("/", "Acme: marketing automation"),
    ("/pricing", "Pricing | Acme"),
    ("/pricing/enterprise", "Enterprise plan | Acme"),
    ("/blog/lead-scoring", "Lead scoring that works | Acme"),
    ("/blog/stitching-101", "Identity stitching 101 | Acme"),
    ("/docs/getting-started", "Getting started | Acme docs"),
    ("/demo", "Book a demo | Acme"),
    ("/careers", "Careers | Acme"),
]
REFERRERS = [
    "",
    "https://www.google.com/",
    "https://www.linkedin.com/",
    "https://news.ycombinator.com/",
    "https://www.acme.example/blog",
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
CAMPAIGNS = ["", "", "", "spring-webinar", "nurture-q2"]


def realistic_events(
    n: int, *, seed: int = 7, cookies: int = 20_000, start: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """``n`` events shaped like ``ma.events`` values: mostly page views by ``cookies`` browsers,
    some custom events, form submits and identifies; ~400 bytes each as JSON."""
    rng = random.Random(seed)
    aids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(cookies)]
    at = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i in range(n):
        at += timedelta(milliseconds=rng.randint(1, 40))
        path, title = rng.choice(PAGES)
        campaign = rng.choice(CAMPAIGNS)
        query = f"?utm_source=newsletter&utm_campaign={campaign}" if campaign else ""
        roll = rng.random()
        kind = (
            "page_view"
            if roll < 0.75
            else "custom"
            if roll < 0.9
            else "form_submit"
            if roll < 0.96
            else "identify"
        )
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": kind,
            "site_id": "acme",
            "received_at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client_ts": (at - timedelta(milliseconds=rng.randint(5, 900)))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "source": "browser",
            "anonymous_id": aids[rng.randrange(cookies)],
            "url": f"https://www.acme.example{path}{query}",
            "path": path,
            "referrer": rng.choice(REFERRERS),
            "title": title,
            "properties": {},
            "user_agent": rng.choice(USER_AGENTS),
        }
        if campaign:
            event["campaign_id"] = campaign
        if kind == "custom":
            event["name"] = rng.choice(["video_played", "pricing_toggle", "signup_started"])
            event["properties"] = {"plan": rng.choice(["starter", "growth", "enterprise"])}
        elif kind in ("form_submit", "identify"):
            event["email"] = f"user{i % 50_000}@example{i % 97}.com"
            event["traits"] = {"first_name": "Ada", "company": "Example Ltd", "title": "Manager"}
            if kind == "form_submit":
                event["form_id"] = "demo-request"
        yield event


EVENTS_COLUMNS = [
    "event_id", "type", "site_id", "received_at", "client_ts", "source", "anonymous_id",
    "contact_id", "pre_identification", "url", "path", "referrer", "title", "name", "form_id",
    "campaign_id", "properties", "automated", "automated_reason", "user_agent",
]  # fmt: skip


def events_table_rows(n: int, *, seed: int) -> list[tuple[Any, ...]]:
    """``n`` rows for the ClickHouse ``events`` table (columns ``EVENTS_COLUMNS``); a different
    ``seed`` gives different event_ids, so inserts are not deduplicated away."""
    rows = []
    for event in realistic_events(n, seed=seed):
        email = event.get("email")
        contact = str(uuid.uuid5(uuid.NAMESPACE_URL, email)) if email else ""
        rows.append(
            (
                event["event_id"],
                event["type"],
                event["site_id"],
                datetime.fromisoformat(event["received_at"]),
                datetime.fromisoformat(event["client_ts"]),
                event["source"],
                event["anonymous_id"],
                contact,
                0 if contact else 1,
                event["url"],
                event["path"],
                event["referrer"],
                event["title"],
                event.get("name", ""),
                event.get("form_id", ""),
                event.get("campaign_id", ""),
                orjson.dumps(event["properties"]).decode(),
                0,
                "",
                event["user_agent"],
            )
        )
    return rows


def encoded_messages(n: int, *, seed: int) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` pairs as the collector would publish them to ``ma.events``."""
    return [(e["anonymous_id"].encode(), orjson.dumps(e)) for e in realistic_events(n, seed=seed)]


# -- Kafka -------------------------------------------------------------------------------------
def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=MAX_BATCH_SIZE,
    )


async def _wait_for_metadata(
    producer: AIOKafkaProducer, topics: tuple[str, ...], timeout: float = 30.0
) -> None:
    """Wait until the producer's metadata has a leader for every partition of ``topics``, so
    that no timed send waits for it (``ensure_topics`` already waited until the broker serves
    them)."""
    deadline = time.monotonic() + timeout
    cluster = producer.client.cluster
    while True:
        await producer.client.force_metadata_update()
        ready = all(
            len(cluster.available_partitions_for_topic(t) or ()) == PARTITIONS for t in topics
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"partitions of {', '.join(topics)} have no leader after {timeout} s"
            )
        await asyncio.sleep(0.2)


async def _produce_send(
    producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    """One ``send()`` per message, then wait for every acknowledgement; returns msgs/s."""
    with Timer() as t:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    return len(messages) / t.seconds


async def _produce_batches(
    producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    """Partition by key (as ``send()`` would), fill ``BatchBuilder``s, one task per partition;
    returns msgs/s including the partitioning."""
    partitioner = DefaultPartitioner()
    with Timer() as t:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for key, value in messages:
            by_partition[partitioner(key, partitions, partitions)].append((key, value))

        async def fill(partition: int, items: list[tuple[bytes, bytes]]) -> list[Any]:
            delivered = []
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    delivered.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            delivered.append(await producer.send_batch(batch, topic, partition=partition))
            return delivered

        filled = await asyncio.gather(*(fill(p, items) for p, items in by_partition.items()))
        await asyncio.gather(*(f for futures in filled for f in futures))
    return len(messages) / t.seconds


async def _consume_all(bootstrap: str, topic: str, expected: int, run: int) -> tuple[float, float]:
    """Read the whole topic with a fresh group; returns (msgs/s, seconds until assigned).

    The rate is measured from the moment the group assigned the partitions to the last message,
    so the group join (reported separately) does not dilute it."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-consume-{uuid.uuid4().hex[:8]}-{run}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    started = time.perf_counter()
    await consumer.start()
    try:
        while not consumer.assignment():
            if time.perf_counter() - started > 30:
                raise RuntimeError(f"no partitions of {topic} assigned within 30 s")
            await asyncio.sleep(0.005)
        assigned = time.perf_counter()
        count = 0
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            count += sum(len(records) for records in batches.values())
            if time.perf_counter() - assigned > 60:
                raise RuntimeError(f"consumed {count} of {expected} messages in 60 s")
        seconds = time.perf_counter() - assigned
        if count != expected:
            raise RuntimeError(f"consumed {count} messages of {topic}, expected {expected}")
        return count / seconds, assigned - started
    finally:
        await consumer.stop()


def _insert(client: Client, *, table: str, rows: list[tuple[Any, ...]]) -> None:
    client.insert(table, rows, column_names=EVENTS_COLUMNS)


# -- the section ---------------------------------------------------------------------------------
@section("baselines")
async def baselines(ctx: BenchContext, out: Section) -> None:
    """Raw aiokafka produce/consume and clickhouse-connect → chDB insert throughput."""
    settings = ctx.settings
    specs = (
        TopicSpec("bench-produce", "anonymous_id", "raw produce baseline", public=False),
        TopicSpec("bench-produce-batch", "anonymous_id", "raw send_batch baseline", public=False),
    )
    # created (and served: ensure_topics waits for that) before the messages are encoded
    ctx.created_topics += await ensure_topics(
        settings.model_copy(update={"topic_partitions": PARTITIONS}), specs
    )
    send_topic, batch_topic = (settings.topic(s.name) for s in specs)

    n = ctx.scale(120_000, 6_000)
    messages = encoded_messages(n, seed=1)
    warmup = messages[: n // 4]
    avg_bytes = sum(len(k) + len(v) for k, v in messages) / n

    producer = _producer(settings.bootstrap)
    await producer.start()
    try:
        await _wait_for_metadata(producer, (send_topic, batch_topic))
        ctx.log(f"kafka.produce: {n:,} messages of ~{avg_bytes:.0f} B, send() …")
        rate = await repeat(
            lambda i: _produce_send(producer, send_topic, warmup if i < 0 else messages)
        )
        note = f"send(), {PARTITIONS} partitions, acks=all, idempotent, linger 5 ms, {n:,} msgs"
        out.add("kafka.produce", rate, "msgs/s", note=note)
        out.add(
            "kafka.produce_mb",
            rate.median * avg_bytes / 1e6,
            "MB/s",
            note=f"~{avg_bytes:.0f} B/msg",
        )

        ctx.log("kafka.produce_batch: create_batch()/send_batch() …")
        rate = await repeat(
            lambda i: _produce_batches(producer, batch_topic, warmup if i < 0 else messages)
        )
        out.add(
            "kafka.produce_batch",
            rate,
            "msgs/s",
            baseline="kafka.produce",
            note=f"create_batch/send_batch, own murmur2 partitioning, a task per partition; "
            f"{rate.median * avg_bytes / 1e6:.1f} MB/s",
        )
    finally:
        await producer.stop()

    total = len(warmup) + 3 * n  # everything the send() runs wrote
    ctx.log(f"kafka.consume: {total:,} messages, getmany() …")
    joins: list[float] = []

    async def consume(i: int) -> float:
        rate, join = await _consume_all(settings.bootstrap, send_topic, total, i)
        joins.append(join)
        return rate

    rate = await repeat(consume)
    out.add(
        "kafka.consume",
        rate,
        "msgs/s",
        note=f"getmany(), fresh group, {total:,} msgs, not decoded; "
        f"group join (~{statistics.median(joins):.2f} s) excluded",
    )

    rows_per_run = ctx.scale(200_000, 20_000)
    ctx.log(f"clickhouse.insert: {rows_per_run:,} rows in batches of {CLICKHOUSE_BATCH:,} …")
    database = "bench_baselines"
    clickhouse = connect(settings.model_copy(update={"clickhouse_database": database}))
    try:
        await clickhouse.run(lambda c: migrate(c, database))
        table = f"{database}.events"
        inserted = 0

        base = events_table_rows(rows_per_run, seed=100)

        async def insert(i: int) -> float:
            nonlocal inserted
            # fresh event_ids each run: identical blocks would be deduplicated, not inserted
            source = base[:CLICKHOUSE_BATCH] if i < 0 else base
            rows = [(str(uuid.uuid4()), *row[1:]) for row in source]
            with Timer() as t:
                for start in range(0, len(rows), CLICKHOUSE_BATCH):
                    chunk = rows[start : start + CLICKHOUSE_BATCH]
                    await clickhouse.run(partial(_insert, table=table, rows=chunk))
            inserted += len(rows)
            return len(rows) / t.seconds

        rate = await repeat(insert)
        stored = await clickhouse.run(lambda c: c.query(f"SELECT count() FROM {table}").result_rows)
        if stored[0][0] != inserted:
            raise RuntimeError(f"{table} holds {stored[0][0]} rows, {inserted} were inserted")
        out.add(
            "clickhouse.insert",
            rate,
            "rows/s",
            note=f"clickhouse-connect → chDB events table, {rows_per_run:,} rows "
            f"in {min(CLICKHOUSE_BATCH, rows_per_run):,}-row inserts",
        )
    finally:
        clickhouse.close()
