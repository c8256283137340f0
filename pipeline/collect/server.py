"""Running the collector: ``ma-pipeline collector``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from pipeline.collect.app import Collector
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings

log = logging.getLogger(__name__)


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
    listening: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM, or cancelled); drains in-flight requests.
    ``listening`` is set once the port accepts connections."""
    collector = Collector(settings, RulesWatcher(settings.config))
    runner = web.AppRunner(collector.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.http_host, settings.http_port, backlog=1024, reuse_address=True
    )
    await site.start()
    log.info("collector listening on http://%s:%d", settings.http_host, settings.http_port)
    if listening is not None:
        listening.set()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM) if handle_signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("collector stopped")
