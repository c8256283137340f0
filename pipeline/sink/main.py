"""``ma-pipeline sink``: the ClickHouse sink as a process of its own, scaled apart from workers.

The sink keeps no state: each process joins the consumer group ``<MA_APP_ID>-sink`` and writes
the partitions Kafka gives it (``pipeline.sink.loop``). How the pieces fit:

- **ClickHouse server** (``MA_CLICKHOUSE_URL=http(s)://…``): run workers with ``MA_SINK=false``
  and as many ``ma-pipeline sink`` processes as you like (up to the topics' partitions); the
  workers still read ClickHouse for segment membership and queries.
- **Embedded chDB** (the default): one process at a time opens its files. Either the worker
  writes them (``MA_SINK=true``, the default, and ``ma-pipeline run``), or one
  ``ma-pipeline sink`` does while the workers run with ``MA_SINK=false``; the sink then answers
  analysts' queries on its own API (``MA_WORKER_URL=http://127.0.0.1:<MA_SINK_WEB_PORT>``
  for ``query`` and ``segments``) and profiles carry no segments.

The sink's API (``MA_SINK_WEB_HOST:MA_SINK_WEB_PORT``): ``GET /healthz``, ``GET /metrics``
(``ma_sink_*``), ``POST /query`` (as the worker's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from pipeline import codec
from pipeline.clickhouse import ClickHouse, connect
from pipeline.clickhouse.migrate import migrate
from pipeline.clock import Clock
from pipeline.errors import check_port
from pipeline.service import health_api, run_service
from pipeline.settings import Settings
from pipeline.sink.loop import SinkLoop
from pipeline.sink.metrics import SinkMetrics
from pipeline.sink.writer import SinkWriter
from pipeline.topics import ensure_topics
from pipeline.warehouse import answer_query

log = logging.getLogger(__name__)


def build_sink(
    settings: Settings,
    clickhouse: ClickHouse,
    registry: CollectorRegistry,
    producer: Callable[[], AIOKafkaProducer],
    clock: Clock,
) -> SinkLoop:
    """The sink loop writing to ``clickhouse``, its metrics in ``registry``."""
    metrics = SinkMetrics(registry)
    writer = SinkWriter(clickhouse, on_retry=lambda table, exc: metrics.retries.labels(table).inc())
    return SinkLoop(settings, writer, metrics, producer, clock)


async def serve_sink(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the sink until ``stop`` is set (or SIGINT/SIGTERM, or cancelled)."""
    await ensure_topics(settings)
    clickhouse = connect(settings)
    registry = CollectorRegistry()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.app_id}-sink",
        acks="all",
        enable_idempotence=True,
    )
    api = health_api(registry)

    async def query(request: web.Request) -> web.Response:
        status, answer = await answer_query(clickhouse, await request.read())
        return web.Response(
            body=codec.dumps(answer), status=status, content_type="application/json"
        )

    api.router.add_post("/query", query)
    try:
        applied = await clickhouse.run(lambda c: migrate(c, settings.clickhouse_database))
        if applied:
            log.info("ClickHouse schema applied: %s", ", ".join(applied))
        await producer.start()
        sink = build_sink(settings, clickhouse, registry, lambda: producer, settings.clock())
        host, port = settings.sink_web_host, settings.sink_web_port
        await run_service(sink.run(), api, host, port, "sink", stop=stop)
    finally:
        await producer.stop()
        clickhouse.close()


def run_sink(settings: Settings) -> None:
    """``ma-pipeline sink``."""
    check_port(settings.sink_web_host, settings.sink_web_port, "MA_SINK_WEB_PORT")
    asyncio.run(serve_sink(settings))
