"""The worker's own HTTP API (``127.0.0.1:MA_WORKER_WEB_PORT``).

In the embedded default the worker process owns the chDB engine (one process per chDB path),
so analysts' commands (``ma-pipeline query``, ``segments``) and the collector's profile lookups
reach it here instead of opening the files.

- ``GET  /healthz``          liveness
- ``GET  /metrics``          Prometheus text (worker metrics)
- ``GET  /debug/tasks``      every asyncio task's stack (diagnosing a stalled worker)
- ``GET  /profile/{aid}``    a cookie's segments and active web triggers (``/v1/profile``)
- ``POST /query``            ``{"sql", "parameters"?}`` → ``{"columns", "rows"}``, read-only
- ``GET  /triggers/pending?email=``  delayed triggers waiting (``pipeline.worker.pending``)
- ``GET  /console…``         the console (``pipeline.console``), behind ``MA_CONSOLE_TOKEN``
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import codec
from pipeline.console import add_console
from pipeline.warehouse import answer_query
from pipeline.worker.pending import pending_view
from pipeline.worker.profiles import Worker, profile_view

log = logging.getLogger(__name__)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(value), status=status, content_type="application/json")


def _await_chain(coro: Any) -> list[str]:
    """Where a coroutine waits, following what it awaits down to the innermost frame."""
    lines = []
    seen = 0
    while coro is not None and seen < 40:
        seen += 1
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "ag_frame", None)
            or getattr(coro, "gi_frame", None)
        )
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )
        if isinstance(nxt, asyncio.Task):
            lines.append(f"(awaits task {nxt.get_name()})")
            nxt = nxt.get_coro()
        elif isinstance(nxt, asyncio.Future):
            lines.append(f"(awaits {nxt!r:.200})")
            nxt = None
        elif nxt is None and frame is not None and hasattr(coro, "cr_frame"):
            pass
        coro = nxt
    return lines


def make_api(worker: Worker) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(worker.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def query(request: web.Request) -> web.Response:
        if worker.clickhouse is None:
            return _json({"error": "this worker has no ClickHouse sink (MA_SINK=false)"}, 503)
        status, answer = await answer_query(worker.clickhouse, await request.read())
        return _json(answer, status)

    async def tasks(request: web.Request) -> web.Response:
        """Every asyncio task and where it waits: for diagnosing a stalled worker."""
        out = io.StringIO()
        for task in asyncio.all_tasks():
            out.write(f"--- {task.get_name()}\n")
            for line in _await_chain(task.get_coro()):
                out.write(f"    {line}\n")
        import gc
        import types

        for obj in gc.get_objects():
            if isinstance(obj, types.CoroutineType) and obj.cr_code.co_name.endswith("_agent"):
                out.write(f"--- agent {obj.cr_code.co_name}\n")
                for line in _await_chain(obj):
                    out.write(f"    {line}\n")
        return web.Response(text=out.getvalue())

    async def consumer(request: web.Request) -> web.Response:
        """The Faust consumer's view of its partitions: for diagnosing a stalled worker."""
        c: Any = worker.app.consumer

        def tps(values: Any) -> list[str]:
            return sorted(f"{tp.topic}:{tp.partition}" for tp in (values or ()))

        state = {
            "assignment": tps(c.assignment()),
            "active": tps(getattr(c, "_active_partitions", None)),
            "paused": tps(getattr(c, "_paused_partitions", None)),
            "buffered": tps(getattr(c, "_buffered_partitions", None)),
            "flow_active": getattr(c, "flow_active", None),
            "committed": {f"{tp.topic}:{tp.partition}": o for tp, o in c._committed_offset.items()},
            "read": {f"{tp.topic}:{tp.partition}": o for tp, o in c._read_offset.items()},
            "in_recovery": worker.app.in_recovery,
            "rebalancing": worker.app.rebalancing,
        }
        return _json(state)

    async def profile(request: web.Request) -> web.Response:
        return _json(profile_view(worker, request.match_info["aid"]))

    async def pending(request: web.Request) -> web.Response:
        return _json({"pending": pending_view(worker, request.query.get("email") or None)})

    add_console(app, worker)
    app.router.add_get("/profile/{aid}", profile)
    app.router.add_get("/triggers/pending", pending)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/debug/consumer", consumer)
    app.router.add_get("/debug/tasks", tasks)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/query", query)
    return app
