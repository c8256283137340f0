"""What a small service process (``ma-pipeline sink``, ``deliver``) shares: an API with
``/healthz`` and ``/metrics``, and running one loop until SIGINT/SIGTERM.

Example::

    api = health_api(registry)
    api.router.add_post("/query", query)
    await run_service(sink.run(), api, settings.sink_web_host, settings.sink_web_port, "sink")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


def health_api(registry: CollectorRegistry) -> web.Application:
    """``GET /healthz`` and ``GET /metrics`` (Prometheus text of ``registry``)."""
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def run_service(
    main: Coroutine[Any, Any, None],
    api: web.Application,
    host: str,
    port: int,
    name: str,
    *,
    stop: asyncio.Event | None = None,
    every_second: Callable[[], Any] | None = None,
) -> None:
    """Serve ``api`` and run ``main`` until it ends (its failure is raised), ``stop`` is set,
    or SIGINT/SIGTERM; ``every_second`` is called once a second meanwhile."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(api, access_log=None, handle_signals=False)
    await runner.setup()
    task = asyncio.ensure_future(main)
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("%s API on http://%s:%d", name, host, port)
        stopped = asyncio.ensure_future(stop.wait())
        while not task.done() and not stopped.done():
            await asyncio.wait({task, stopped}, timeout=1.0)
            if every_second is not None:
                every_second()
        stopped.cancel()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # a failure of the loop itself is raised here
        await runner.cleanup()
