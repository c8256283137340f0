"""Where analysts' queries go: the one way the CLI and the collector read ClickHouse.

With a ClickHouse server (``MA_CLICKHOUSE_URL=http(s)://…``) queries go straight to it. With
embedded chDB the worker process owns the engine (one process per chDB path), so queries go to
the worker API (``MA_WORKER_URL``); when no worker runs, the files are opened directly.
Every query runs read-only.

Example::

    columns, rows = await run_query(settings, "SELECT count() FROM events")
"""

from __future__ import annotations

from typing import Any

import aiohttp

from pipeline import codec
from pipeline.clickhouse import ClickHouse, connect
from pipeline.settings import Settings

READ_ONLY = {"readonly": 1}


class QueryError(Exception):
    """ClickHouse refused the query; the message is ClickHouse's."""


async def run_query(
    settings: Settings, sql: str, parameters: dict[str, Any] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Run a read-only query; return column names and rows."""
    parameters = parameters or {}
    if settings.clickhouse_url.startswith("chdb://"):
        try:
            return await _via_worker(settings, sql, parameters)
        except aiohttp.ClientConnectionError:
            pass  # no worker holds the engine: open it here
    clickhouse = connect(settings)
    try:
        return await _direct(clickhouse, sql, parameters)
    finally:
        clickhouse.close()


async def _via_worker(
    settings: Settings, sql: str, parameters: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    timeout = aiohttp.ClientTimeout(total=300, connect=2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        response = await http.post(
            f"{settings.worker_api}/query", data=codec.dumps({"sql": sql, "parameters": parameters})
        )
        body = codec.loads(await response.read())
    if response.status != 200:
        raise QueryError(body.get("error", f"worker API answered {response.status}"))
    return body["columns"], body["rows"]


async def _direct(
    clickhouse: ClickHouse, sql: str, parameters: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    try:
        result = await clickhouse.run(
            lambda c: c.query(sql, parameters=parameters, settings=READ_ONLY)
        )
    except Exception as exc:
        raise QueryError(str(exc).split("\n")[0]) from exc
    return list(result.column_names), [list(row) for row in result.result_rows]
