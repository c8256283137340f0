"""Where analysts' queries go: the one way the CLI and the collector read ClickHouse.

With a ClickHouse server (``MA_CLICKHOUSE_URL=http(s)://…``) queries go straight to it. With
embedded chDB the worker process owns the engine (one process per chDB path), so queries go to
the worker API (``MA_WORKER_URL``); when no worker runs, the command line opens the files
directly, while a long-running service (the collector) must not take the engine from the worker
and gets ``WarehouseUnavailable`` instead (``open_embedded=False``). Every query runs read-only.

Example::

    columns, rows = await run_query(settings, "SELECT count() FROM events")
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from pipeline import codec
from pipeline.clickhouse import ClickHouse, connect
from pipeline.settings import Settings

READ_ONLY = {"readonly": 1}


def read(
    client: Client, sql: str, parameters: dict[str, Any], settings: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """Run a read-only query: its column names and rows. chDB names no columns when a query
    returns no rows, so then they come from ``DESCRIBE`` of the same query (not run again)."""
    result = client.query(sql, parameters=parameters, settings=settings)
    columns = list(result.column_names)
    rows = [list(row) for row in result.result_rows]
    if not columns and not rows:
        described = client.query(
            f"DESCRIBE TABLE ({sql})", parameters=parameters, settings=settings
        )
        columns = [row[0] for row in described.result_rows]
    return columns, rows


#: the most rows one query answers through the worker's (or the sink's) API
MAX_ROWS = 1_000_000


async def answer_query(clickhouse: ClickHouse, body: bytes) -> tuple[int, dict[str, Any]]:
    """The API's answer to ``POST /query`` (``{"sql", "parameters"?}``): status and JSON,
    ``{"columns", "rows"}`` or ``{"error"}``. Read-only, at most ``MAX_ROWS`` rows."""
    try:
        request = codec.loads(body)
        sql = request["sql"]
        parameters = request.get("parameters") or {}
        if not isinstance(sql, str) or not isinstance(parameters, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return 400, {"error": 'body must be {"sql": "...", "parameters": {...}}'}
    # readonly last: settings after it could not be set
    limits = {"max_result_rows": MAX_ROWS, "result_overflow_mode": "throw", "readonly": 1}
    try:
        columns, rows = await clickhouse.read(lambda c: read(c, sql, parameters, limits))
    except Exception as exc:
        return 400, {"error": refusal(exc)}
    return 200, {"columns": columns, "rows": rows}


class QueryError(Exception):
    """ClickHouse refused the query; the message is ClickHouse's."""


class WarehouseUnavailable(QueryError):
    """ClickHouse, or the worker that owns embedded chDB, did not answer; retry later."""


async def run_query(
    settings: Settings,
    sql: str,
    parameters: dict[str, Any] | None = None,
    *,
    open_embedded: bool = True,
) -> tuple[list[str], list[list[Any]]]:
    """Run a read-only query; return column names and rows.

    ``open_embedded=False``: with embedded chDB, never open the files in this process (a
    service beside the worker); an unreachable worker raises ``WarehouseUnavailable``.
    """
    parameters = parameters or {}
    if settings.clickhouse_url.startswith("chdb://"):
        try:
            return await _via_worker(settings, sql, parameters)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if not open_embedded or isinstance(exc, TimeoutError):
                raise WarehouseUnavailable(
                    f"the worker API at {settings.worker_api} did not answer "
                    f"({type(exc).__name__}): is the worker running?"
                ) from exc
            # no worker holds the engine: open it here
    clickhouse = connect(settings)
    try:
        return await _direct(clickhouse, sql, parameters)
    finally:
        await asyncio.to_thread(clickhouse.close)


async def _via_worker(
    settings: Settings, sql: str, parameters: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    timeout = aiohttp.ClientTimeout(total=300, connect=2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        response = await http.post(
            f"{settings.worker_api}/query", data=codec.dumps({"sql": sql, "parameters": parameters})
        )
        raw = await response.read()
    try:
        body = codec.loads(raw)
    except codec.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        body = {}
    if response.status != 200 or "rows" not in body:
        error = body.get("error") or f"the worker API answered {response.status}"
        raise (WarehouseUnavailable if response.status == 503 else QueryError)(error)
    return body["columns"], body["rows"]


async def _direct(
    clickhouse: ClickHouse, sql: str, parameters: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    try:
        return await clickhouse.read(lambda c: read(c, sql, parameters, READ_ONLY))
    except OperationalError as exc:  # the server did not answer (clickhouse-connect's word)
        raise WarehouseUnavailable(str(exc).split("\n")[0]) from exc
    except Exception as exc:
        raise QueryError(refusal(exc)) from exc


def refusal(exc: BaseException) -> str:
    """ClickHouse's reason for refusing a query, on one line: without the query text it echoes
    (with the settings appended to it) and the server's version."""
    text = str(exc).split("\n")[0]
    text = re.sub(r"\s*\(version [^)]*\)", "", text)
    text = re.sub(r"\s*SETTINGS\s+\w+\s*=.*$", "", text)
    while text.startswith("Code: ") and text.count("DB::Exception: ") > 1:
        text = text.split("DB::Exception: ", 1)[1]  # chDB nests the same error in itself
    return text[:2000]
