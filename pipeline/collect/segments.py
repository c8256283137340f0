"""Segments over HTTP, for backends holding a key with ``segments:read``: the same lists as
``ma-pipeline segments list|count|export``, from the rules file in force.

- ``GET /v1/segments``                          ``{"segments": [{name, description, kind}]}``
- ``GET /v1/segments/{name}/count``             ``{"segment": name, "count": n}``
- ``GET /v1/segments/{name}/export?format=csv`` the members, as the CLI's export (``csv`` with a
  header, or ``json``: one object per line), written out in chunks

``401`` without a known key, ``403`` for a key without ``segments:read`` (a site's server key
has only ``ingest:<site>``), ``404`` for a segment the rules do not define, ``503`` when
ClickHouse (with embedded chDB: the worker API that owns it) does not answer. Segments carry no
site: they are the organisation's, over the contacts its sites share.

Example::

    endpoints = SegmentEndpoints(settings, rules, authorize=collector.authorize)
    endpoints.add_routes(app)
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from pipeline import codec
from pipeline.rules import RulesWatcher
from pipeline.rules.keys import Credential
from pipeline.rules.models import SEGMENTS_READ, Segment
from pipeline.segments import EXPORT_COLUMNS, Compiled, compile_segment
from pipeline.settings import Settings
from pipeline.warehouse import QueryError, WarehouseUnavailable, run_query

log = logging.getLogger(__name__)

RETRY_AFTER = "5"
#: Rows rendered per write of an export: bounded chunks, never one ever-growing string.
EXPORT_CHUNK_ROWS = 1000
NO_STORE = {"Cache-Control": "no-store, max-age=0"}
FORMATS = {"csv": "text/csv", "json": "application/x-ndjson"}


#: The collector's key check: the request's key if it holds the scope, else the 401/403 answer.
Authorize = Callable[[web.Request, str], Awaitable[Credential | web.Response]]


class SegmentEndpoints:
    """The ``/v1/segments`` routes, answering from ``rules`` (reloaded on change)."""

    def __init__(self, settings: Settings, rules: RulesWatcher, authorize: Authorize) -> None:
        self.settings = settings
        self.rules = rules
        self.authorize = authorize

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/segments", self.list_segments)
        app.router.add_get("/v1/segments/{name}/count", self.count)
        app.router.add_get("/v1/segments/{name}/export", self.export)

    async def list_segments(self, request: web.Request) -> web.Response:
        """``GET /v1/segments``: name, description and kind (``rules`` or ``sql``) of each."""
        if isinstance(refused := await self.authorize(request, SEGMENTS_READ), web.Response):
            return refused
        segments = [
            {
                "name": s.name,
                "description": s.description or "",
                "kind": "sql" if s.sql is not None else "rules",
            }
            for s in self.rules.rules.segments
        ]
        return _json({"segments": segments}, 200, NO_STORE)

    async def count(self, request: web.Request) -> web.Response:
        """``GET /v1/segments/{name}/count``: how many contacts are in it now."""
        if isinstance(refused := await self.authorize(request, SEGMENTS_READ), web.Response):
            return refused
        name = request.match_info["name"]
        compiled = self._compiled(name)
        if isinstance(compiled, web.Response):
            return compiled
        result = await self._query(name, compiled.count_sql(), compiled.parameters)
        if isinstance(result, web.Response):
            return result
        _, rows = result
        return _json({"segment": name, "count": int(rows[0][0])}, 200, NO_STORE)

    async def export(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/segments/{name}/export?format=csv|json``: the members with their attributes,
        consent, CRM status, creation time, score and lifecycle stage."""
        if isinstance(refused := await self.authorize(request, SEGMENTS_READ), web.Response):
            return refused
        fmt = request.query.get("format", "csv")
        if fmt not in FORMATS:
            return _json({"error": f"format: {fmt!r} is not one of csv, json"}, 400)
        name = request.match_info["name"]
        compiled = self._compiled(name)
        if isinstance(compiled, web.Response):
            return compiled
        sql = compiled.export_sql(self.settings.clickhouse_database)
        result = await self._query(name, sql, compiled.parameters)
        if isinstance(result, web.Response):
            return result
        columns, rows = result
        columns = columns or list(EXPORT_COLUMNS)  # chDB names none for an empty result
        response = web.StreamResponse(
            headers={
                **NO_STORE,
                "Content-Type": f"{FORMATS[fmt]}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
            }
        )
        await response.prepare(request)
        if fmt == "csv":
            await response.write(csv_chunk([columns]))
        for start in range(0, len(rows), EXPORT_CHUNK_ROWS):
            chunk = rows[start : start + EXPORT_CHUNK_ROWS]
            await response.write(csv_chunk(chunk) if fmt == "csv" else _json_chunk(columns, chunk))
        await response.write_eof()
        return response

    # -- helpers --------------------------------------------------------------------------
    def _compiled(self, name: str) -> Compiled | web.Response:
        rules = self.rules.rules
        segment: Segment | None = rules.segment(name)
        if segment is None:
            known = ", ".join(s.name for s in rules.segments) or "none"
            return _json({"error": f"no segment {name!r} in the rules (known: {known})"}, 404)
        return compile_segment(
            segment, self.settings.clickhouse_database, half_life=rules.scoring.half_life
        )

    async def _query(
        self, name: str, sql: str, parameters: dict[str, Any]
    ) -> tuple[list[str], list[list[Any]]] | web.Response:
        try:
            # Never open embedded chDB here: the worker owns it (one process per chDB path).
            return await run_query(self.settings, sql, parameters, open_embedded=False)
        except WarehouseUnavailable as exc:
            log.warning("segment %s: the warehouse is unavailable: %s", name, exc)
            return _json(
                {"error": f"segments are not available right now ({exc}); retry later"},
                503,
                {"Retry-After": RETRY_AFTER},
            )
        except QueryError as exc:
            log.error("segment %s: ClickHouse refused its query: %s", name, exc)
            return _json({"error": f"segment {name!r}: ClickHouse refused its query: {exc}"}, 500)


def _cell(value: Any) -> Any:
    """A CSV cell as ``ma-pipeline segments export`` writes it: maps and lists as JSON."""
    if isinstance(value, dict | list):
        return codec.dumps(value).decode()
    if isinstance(value, datetime):
        return codec.dumps(value).decode().strip('"')
    return value


def csv_chunk(rows: list[list[Any]]) -> bytes:
    """Rows as ``ma-pipeline segments export`` writes them in CSV (the console's export too)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode()


def _json_chunk(columns: list[str], rows: list[list[Any]]) -> bytes:
    return b"".join(codec.dumps(dict(zip(columns, row, strict=True))) + b"\n" for row in rows)


def _json(value: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=codec.dumps(value), status=status, content_type="application/json", headers=headers
    )
