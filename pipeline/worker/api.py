"""The worker's own HTTP API (``127.0.0.1:MA_WORKER_WEB_PORT``).

In the embedded default the worker process owns the chDB engine (one process per chDB path),
so analysts' commands (``ma-pipeline query``, ``segments``) and the collector's profile lookups
reach it here instead of opening the files.

- ``GET  /healthz``          liveness
- ``GET  /metrics``          Prometheus text (worker metrics)
- ``POST /query``            ``{"sql", "parameters"?}`` → ``{"columns", "rows"}``, read-only
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import codec

if TYPE_CHECKING:
    from pipeline.worker.app import Worker

log = logging.getLogger(__name__)
MAX_ROWS = 1_000_000


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(value), status=status, content_type="application/json")


def make_api(worker: Worker) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(worker.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip

    async def query(request: web.Request) -> web.Response:
        if worker.clickhouse is None:
            return _json({"error": "this worker has no ClickHouse sink (MA_SINK=false)"}, 503)
        try:
            body = codec.loads(await request.read())
            sql = body["sql"]
            parameters = body.get("parameters") or {}
            if not isinstance(sql, str) or not isinstance(parameters, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _json({"error": 'body must be {"sql": "...", "parameters": {...}}'}, 400)
        try:
            result = await worker.clickhouse.run(lambda c: c.query(
                sql, parameters=parameters,
                settings={"readonly": 1, "max_result_rows": MAX_ROWS, "result_overflow_mode": "throw"},
            ))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the analyst gets ClickHouse's message
            return _json({"error": str(exc).split("\n")[0][:2000]}, 400)
        rows = [list(row) for row in result.result_rows]
        return _json({"columns": list(result.column_names), "rows": rows})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/query", query)
    return app
