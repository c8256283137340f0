"""The console (CONTRACT §8): pages for operators and marketers on the worker API.

Example::

    add_console(app, worker)     # the worker API's aiohttp application
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.console.data import ConsoleDataUnavailable, Reader
from pipeline.console.views import Console
from pipeline.warehouse import QueryError, WarehouseUnavailable, read, refusal, run_query
from pipeline.worker.profiles import Worker

#: what one console query may return (its tables are bounded by LIMITs; this is the backstop)
LIMITS = {"max_result_rows": 100_000, "result_overflow_mode": "throw", "readonly": 1}


def reader_for(worker: Worker) -> Reader:
    """Read-only SQL where this worker reads ClickHouse: its own connection (with its sink, or
    a ClickHouse server), else the process that owns embedded chDB (``ma-pipeline sink``)."""
    settings = worker.settings

    async def read_(sql: str, parameters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
        clickhouse = worker.clickhouse
        if clickhouse is not None:
            try:
                return await clickhouse.read(lambda c: read(c, sql, parameters, LIMITS))
            except Exception as exc:
                raise QueryError(refusal(exc)) from exc
        owner = settings.model_copy(
            update={"worker_url": f"http://127.0.0.1:{settings.sink_web_port}"}
        )
        try:
            return await run_query(owner, sql, parameters, open_embedded=False)
        except WarehouseUnavailable as exc:
            raise ConsoleDataUnavailable(str(exc)) from exc

    return read_


def add_console(app: web.Application, worker: Worker) -> Console:
    console = Console(worker, reader_for(worker))
    console.add_routes(app)
    return console


__all__ = ["Console", "add_console", "reader_for"]
