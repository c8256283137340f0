"""``ma-pipeline deliver``: webhook delivery of triggers as a process of its own (also inside
``ma-pipeline run``). Its API (``MA_DELIVER_WEB_HOST:MA_DELIVER_WEB_PORT``): ``GET /healthz``,
``GET /metrics`` (``ma_deliveries_total``, ``ma_delivery_seconds``, ``ma_delivery_pending``)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from pipeline.deliver.loop import Deliverer
from pipeline.errors import check_port
from pipeline.rules import RulesWatcher
from pipeline.service import health_api, run_service
from pipeline.settings import Settings
from pipeline.topics import ensure_topics

log = logging.getLogger(__name__)


async def serve_deliver(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Deliver until ``stop`` is set (or SIGINT/SIGTERM)."""
    await ensure_topics(settings)
    rules = RulesWatcher(settings.config)
    registry = CollectorRegistry()
    deliverer = Deliverer(settings, rules, settings.clock(), registry)
    host, port = settings.deliver_web_host, settings.deliver_web_port
    await run_service(
        deliverer.run(),
        health_api(registry),
        host,
        port,
        "deliver",
        stop=stop,
        every_second=rules.poll,  # a changed rules file takes effect (destinations too)
    )


def run_deliver(settings: Settings) -> None:
    """``ma-pipeline deliver``."""
    check_port(settings.deliver_web_host, settings.deliver_web_port, "MA_DELIVER_WEB_PORT")
    asyncio.run(serve_deliver(settings))
