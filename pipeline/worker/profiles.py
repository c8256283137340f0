"""The on-site profile of a cookie (``GET /v1/profile?aid=``): the segments its contact belongs
to and its active web triggers — never an email, a name or a score history.

Web triggers come from the worker's state (the cookie's anonymous profile and, once linked, its
contact's). Segment membership is recomputed from ClickHouse every ``MA_SEGMENT_REFRESH``
seconds into an in-memory map, so an answer costs two table reads and a dictionary lookup.
With several workers a cookie's and its contact's state may live on different workers; the
answer then holds what this worker knows (route requests by cookie to its owner to avoid it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client

from pipeline.clickhouse import ClickHouse
from pipeline.clock import Clock, from_millis, to_millis
from pipeline.rules import RulesWatcher
from pipeline.segments import compile_segment
from pipeline.settings import Settings
from pipeline.worker.metrics import WorkerMetrics


class Worker(Protocol):
    """What the worker's API and profiles read of the running worker (``worker.app.Worker``
    is one): a protocol, so that these modules do not import the app that serves them."""

    settings: Settings
    rules: RulesWatcher
    clock: Clock
    metrics: WorkerMetrics
    clickhouse: ClickHouse | None
    app: Any  # the Faust app (debug pages)
    cookies: Any  # the worker's tables
    contacts: Any
    membership: SegmentMembership

    def load(self, table: Any, key: str) -> Any: ...

    def refused(self, source: str, error: str) -> None: ...

    def waiting_keys(self) -> list[tuple[Any, list[str]]]: ...


log = logging.getLogger(__name__)
MAX_MEMBERS = 2_000_000  # larger segments are left out of profiles (they say nothing specific)


class SegmentMembership:
    """contact_id → names of the segments it belongs to, refreshed periodically."""

    def __init__(self) -> None:
        self.by_contact: dict[str, list[str]] = {}
        self.refreshed_at: float | None = None

    async def refresh(self, worker: Worker) -> None:
        if worker.clickhouse is None:
            return
        rules = worker.rules.rules
        database = worker.settings.clickhouse_database
        members: dict[str, list[str]] = {}
        for segment in rules.segments:
            compiled = compile_segment(segment, database)
            sql = f"SELECT contact_id FROM ({compiled.sql}) LIMIT {MAX_MEMBERS + 1}"
            try:
                result = await worker.clickhouse.run(_query(sql, compiled.parameters))
            except Exception as exc:
                log.warning(
                    "segment %s could not be evaluated for profiles: %s",
                    segment.name,
                    str(exc).split("\n")[0],
                )
                continue
            rows = result.result_rows
            if len(rows) > MAX_MEMBERS:
                continue
            for (contact_id,) in rows:
                members.setdefault(str(contact_id), []).append(segment.name)
        self.by_contact = members
        self.refreshed_at = asyncio.get_running_loop().time()


def _query(sql: str, parameters: dict[str, Any]) -> Callable[[Client], Any]:
    return lambda client: client.query(sql, parameters=parameters, settings={"readonly": 1})


def _active(entries: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    return [
        {"rule": w["rule"], "trigger_id": w["trigger_id"], "active_until": from_millis(w["until"])}
        for w in entries
        if w.get("until", 0) > now_ms
    ]


def _triggers(state: dict[str, Any] | None) -> dict[str, Any]:
    """A key's trigger state (in its profile in state written by older versions)."""
    state = state or {}
    found: dict[str, Any] = state.get("triggers") or state.get("profile") or {}
    return found


def profile_view(worker: Worker, anonymous_id: str) -> dict[str, Any]:
    """What ``/v1/profile`` answers for a cookie."""
    now_ms = to_millis(worker.clock.now())
    cookie = worker.load(worker.cookies, anonymous_id)
    contact_id = (cookie or {}).get("cookie", {}).get("contact_id")
    web = _active(_triggers(cookie).get("web") or [], now_ms)
    segments: list[str] = []
    if contact_id:
        contact = worker.load(worker.contacts, contact_id)
        web += _active(_triggers(contact).get("web") or [], now_ms)
        segments = sorted(worker.membership.by_contact.get(contact_id, []))
    return {
        "anonymous_id": anonymous_id,
        "identified": contact_id is not None,
        "segments": segments,
        "web_triggers": web,
    }
