"""``ma-pipeline deliver``: webhook delivery of triggers as a process of its own (also inside
``ma-pipeline run``). Its API (``MA_DELIVER_WEB_HOST:MA_DELIVER_WEB_PORT``): ``GET /healthz``,
``GET /metrics`` (``ma_deliveries``, ``ma_delivery_seconds``, ``ma_delivery_pending``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.deliver.loop import Deliverer
from pipeline.errors import check_port
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.topics import ensure_topics

log = logging.getLogger(__name__)


def _api(registry: CollectorRegistry) -> web.Application:
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_deliver(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Deliver until ``stop`` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await ensure_topics(settings)
    rules = RulesWatcher(settings.config)
    registry = CollectorRegistry()
    deliverer = Deliverer(settings, rules, settings.clock(), registry)
    runner = web.AppRunner(_api(registry), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        host, port = settings.deliver_web_host, settings.deliver_web_port
        await web.TCPSite(runner, host, port).start()
        log.info("deliver API on http://%s:%d", host, port)
        task = asyncio.ensure_future(deliverer.run())
        stopped = asyncio.ensure_future(stop.wait())
        while not task.done() and not stopped.done():
            await asyncio.wait({task, stopped}, timeout=1.0)
            rules.poll()  # a changed rules file takes effect (destinations too)
        for pending in (task, stopped):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await runner.cleanup()


def run_deliver(settings: Settings) -> None:
    """``ma-pipeline deliver``."""
    check_port(settings.deliver_web_host, settings.deliver_web_port, "MA_DELIVER_WEB_PORT")
    asyncio.run(serve_deliver(settings))
