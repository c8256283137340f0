"""Writing batches to ClickHouse: idempotently, off the event loop, retrying until it works.

- Each insert carries an ``insert_deduplication_token`` made from the batch's topic offsets, so
  a batch replayed with the same boundaries adds nothing (tables keep a deduplication window).
- Rows of tables with an id (``events``, ``triggers``) are also checked against the ids already
  stored, so a replay with other boundaries (after a crash) adds nothing either.
- While ClickHouse is unavailable the writer retries with backoff and does not return: the
  agent does not acknowledge the batch, so nothing is lost and offsets are not committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.clickhouse import ClickHouse
from pipeline.sink.rows import ID_COLUMNS, TABLE_COLUMNS

log = logging.getLogger(__name__)


class SinkWriter:
    """Inserts rows grouped by table; ``write`` returns only once every table is written."""

    def __init__(
        self,
        clickhouse: ClickHouse,
        *,
        on_retry: Callable[[str, Exception], None] | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.clickhouse = clickhouse
        self.database = clickhouse.database
        self.on_retry = on_retry
        self.max_backoff = max_backoff

    async def write(self, rows: list[tuple[str, tuple[Any, ...]]], batch_id: str) -> dict[str, int]:
        """Write rows (``(table, row)`` pairs); return rows written per table."""
        by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for table, row in rows:
            by_table[table].append(row)
        written = {}
        for table, table_rows in by_table.items():
            token = hashlib.sha256(f"{batch_id}|{table}".encode()).hexdigest()[:32]
            written[table] = await self._retrying(table, lambda c, t=table, r=table_rows, k=token:
                                                  self._insert(c, t, r, k))  # fmt: skip
        return written

    async def _retrying(self, table: str, fn: Callable[[Client], int]) -> int:
        delay = 0.5
        while True:
            try:
                return await self.clickhouse.run(fn)
            except Exception as exc:  # noqa: BLE001 - any failure: retry, never drop the batch
                log.warning("ClickHouse insert into %s failed (%s); retrying in %.1fs",
                            table, exc, delay)  # fmt: skip
                if self.on_retry is not None:
                    self.on_retry(table, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.clickhouse.reset)
                except Exception:  # noqa: BLE001
                    log.debug("reset failed", exc_info=True)

    async def erase(self, request: dict[str, Any]) -> int:
        """Delete every row of an erased contact (``ma-pipeline forget``); record the erasure."""
        return await self._retrying("erasure", lambda c: _erase(c, self.database, request))

    def _insert(self, client: Client, table: str, rows: list[tuple[Any, ...]], token: str) -> int:
        columns = TABLE_COLUMNS[table]
        id_column = ID_COLUMNS.get(table)
        if id_column is not None:
            index = columns.index(id_column)
            unique = {row[index]: row for row in rows}  # also drops duplicates inside the batch
            existing = {
                r[0]
                for r in client.query(
                    f"SELECT {id_column} FROM {self.database}.{table} "  # noqa: S608 - fixed names
                    f"WHERE {id_column} IN {{ids:Array(String)}}",
                    parameters={"ids": list(unique)},
                ).result_rows
            }
            rows = [row for key, row in unique.items() if key not in existing]
        if rows:
            client.insert(f"{self.database}.{table}", rows, column_names=list(columns),
                          settings={"insert_deduplication_token": token})  # fmt: skip
        return len(rows)


#: What ``erase`` deletes: (table, condition). ``{c}`` is the contact, ``{a}`` its cookies.
ERASE = (
    ("events", "contact_id = {c:String} OR (anonymous_id IN {a:Array(String)} AND pre_identification = 1)"),
    ("identities", "contact_id = {c:String} OR previous_contact_id = {c:String}"),
    ("score_changes", "contact_id = {c:String} OR anonymous_id IN {a:Array(String)}"),
    ("score_state", "contact_id = {c:String}"),
    ("triggers", "contact_id = {c:String} OR anonymous_id IN {a:Array(String)}"),
)


def _erase(client: Client, database: str, request: dict[str, Any]) -> int:
    params = {"c": request["contact_id"], "a": list(request.get("cookies") or [])}
    deleted = 0
    for table, condition in ERASE:
        where = condition
        deleted += int(client.query(
            f"SELECT count() FROM {database}.{table} WHERE {where}", parameters=params  # noqa: S608
        ).result_rows[0][0])  # fmt: skip
        client.command(f"DELETE FROM {database}.{table} WHERE {where}", parameters=params)  # noqa: S608
    # contact_versions holds the email: rewrite its parts so nothing stays on disk
    deleted += int(client.query(
        f"SELECT count() FROM {database}.contact_versions WHERE contact_id = {{c:String}}",  # noqa: S608
        parameters=params).result_rows[0][0])  # fmt: skip
    client.command(
        f"ALTER TABLE {database}.contact_versions DELETE WHERE contact_id = {{c:String}}",
        parameters=params, settings={"mutations_sync": 2},
    )  # fmt: skip
    erasure_id = str(request.get("erasure_id") or "")
    digest = hashlib.sha256(f"{erasure_id}|{request['contact_id']}".encode()).hexdigest()
    client.insert(f"{database}.erasures", [(erasure_id, digest, _now(), deleted)],
                  column_names=["erasure_id", "contact_hash", "requested_at", "rows_deleted"])  # fmt: skip
    return deleted


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
