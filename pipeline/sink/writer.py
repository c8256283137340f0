"""Writing batches to ClickHouse: idempotently, off the event loop, retrying until it works.

- Each insert carries an ``insert_deduplication_token`` made from the batch's topic offsets and
  the keys of its rows (the rows themselves for versioned tables), so a batch replayed with the same
  boundaries adds nothing (tables keep a deduplication window).
- Rows of ``events``, ``triggers``, ``identities`` and ``score_changes`` are also checked against
  the keys already stored (``ROW_KEYS``), so a replay with other boundaries (after a crash) and
  a record the worker produced twice (at-least-once) add nothing either. A Bloom filter of the
  stored keys per table (``pipeline.sink.stored``) rules out the new keys; only the keys it may
  hold are looked up in ClickHouse, so most batches ask nothing. ``contact_versions``
  and ``score_state`` are versioned tables read through ``FINAL``: a repeated row changes nothing.
- While ClickHouse is unavailable the writer retries with backoff and does not return: the
  agent does not acknowledge the batch, so nothing is lost and offsets are not committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache, partial
from operator import itemgetter
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

from pipeline import codec
from pipeline.clickhouse import ClickHouse
from pipeline.sink.rows import ROW_KEYS, TABLE_COLUMNS
from pipeline.sink.stored import Hashes, StoredKeys, key_expression, key_hashes

log = logging.getLogger(__name__)
Row = tuple[Any, ...]


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
        self._stored: dict[str, StoredKeys] = {}  # loaded on a table's first insert
        self._types: dict[str, list[ClickHouseType]] = {}  # each table's, from one DESCRIBE
        self.lookups = 0  # keys looked up in ClickHouse (the filter could not rule them out)

    def forget_stored(self) -> None:
        """Load the stored keys again before the next insert (another sink process may have
        written the partitions this one now has)."""
        self._stored.clear()

    async def write(self, rows: list[tuple[str, tuple[Any, ...]]], batch_id: str) -> dict[str, int]:
        """Write rows (``(table, row)`` pairs); return rows written per table."""
        by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for table, row in rows:
            by_table[table].append(row)
        written = {}
        for table, table_rows in by_table.items():
            insert = partial(self._insert, table=table, rows=table_rows, batch_id=batch_id)
            written[table] = await self._retrying(table, insert)
        return written

    async def _retrying(self, table: str, fn: Callable[[Client], int]) -> int:
        delay = min(0.5, self.max_backoff)
        while True:
            try:
                return await self.clickhouse.run(fn)
            except Exception as exc:
                log.warning("ClickHouse insert into %s failed (%s); retrying in %.1fs",
                            table, exc, delay)  # fmt: skip
                if self.on_retry is not None:
                    self.on_retry(table, exc)
                self._types.clear()  # the server may have been migrated meanwhile
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.clickhouse.reset)
                except Exception:
                    log.debug("reset failed", exc_info=True)

    async def erase(self, request: dict[str, Any]) -> int:
        """Delete every row of an erased contact (``ma-pipeline forget``); record the erasure.
        With embedded chDB the parts that held them are removed from disk at once, too."""
        purge = self.clickhouse.embedded

        def erase(client: Client) -> int:
            deleted = _erase(client, self.database, request)
            if purge:
                _purge_outdated(client, self.database, ERASED_TABLES)
            return deleted

        return await self._retrying("erasure", erase)

    def _insert(self, client: Client, *, table: str, rows: list[Row], batch_id: str) -> int:
        columns = TABLE_COLUMNS[table]
        hashes: Hashes | None = None
        stored: StoredKeys | None = None
        if table in ROW_KEYS:
            rows, keys, hashes, stored = self._new_rows(client, table, rows)
            # the keys name the rows: a retry after a partial failure (some rows stored, so
            # fewer left) must not be mistaken for the earlier insert
            identity = codec.dumps(keys)
        else:
            identity = codec.dumps(rows)  # orjson: a tenth of the time repr() took
        if rows:
            named = f"{batch_id}|{table}|".encode() + identity
            token = hashlib.sha256(named).hexdigest()[:32]
            client.insert(f"{self.database}.{table}", rows, column_names=list(columns),
                          column_types=self._column_types(client, table),
                          settings={"insert_deduplication_token": token})  # fmt: skip
            if stored is not None and hashes is not None:
                stored.add(hashes)
        return len(rows)

    def _column_types(self, client: Client, table: str) -> list[ClickHouseType]:
        """The types of ``table``'s columns, asked once: clickhouse-connect otherwise runs a
        ``DESCRIBE TABLE`` before every insert (a tenth of an insert's time in chDB, a round
        trip more with a server)."""
        types = self._types.get(table)
        if types is None:
            context = client.create_insert_context(
                f"{self.database}.{table}", column_names=list(TABLE_COLUMNS[table])
            )
            types = self._types[table] = list(context.column_types)
        return types

    def _stored_keys(self, client: Client, table: str) -> StoredKeys:
        stored = self._stored.get(table)
        if stored is None:
            key_columns, _ = ROW_KEYS[table]
            hashes = client.query_np(
                f"SELECT {key_expression(key_columns, TIME_COLUMNS)} FROM {self.database}.{table}"
            )
            stored = self._stored[table] = StoredKeys(len(hashes))
            stored.add(hashes.astype("uint64").ravel())
        return stored

    def _new_rows(
        self, client: Client, table: str, rows: list[Row]
    ) -> tuple[list[Row], list[tuple[Any, ...]], Hashes, StoredKeys]:
        """The rows whose key is neither stored yet nor repeated earlier in ``rows``, their
        keys, the keys' hashes and the filter to add them to once inserted."""
        key_columns, lookup = ROW_KEYS[table]
        key_of = _key_function(table)
        unique: dict[tuple[Any, ...], Row] = {}
        for row in rows:
            unique.setdefault(key_of(row), row)
        keys = list(unique)
        hashes = key_hashes(keys)
        known = self._stored_keys(client, table)
        maybe = known.may_hold(hashes)
        doubtful = [key for key, held in zip(keys, maybe, strict=True) if held]
        stored: set[tuple[Any, ...]] = set()
        if doubtful:
            self.lookups += len(doubtful)
            selected = ", ".join(
                f"toUnixTimestamp64Milli({c})" if c in TIME_COLUMNS else c for c in key_columns
            )
            where = " AND ".join(f"{c} IN {{k{n}:Array(String)}}"
                                 for n, c in enumerate(key_columns[:lookup]))  # fmt: skip
            parameters = {f"k{n}": sorted({str(key[n]) for key in doubtful}) for n in range(lookup)}
            stored = {
                tuple(row)
                for row in client.query(
                    f"SELECT {selected} FROM {self.database}.{table} WHERE {where}",
                    parameters=parameters,
                ).result_rows
            }
        if not stored:  # most batches: every key is new
            return list(unique.values()), keys, hashes, known
        new = [i for i, key in enumerate(keys) if key not in stored]
        return [unique[keys[i]] for i in new], [keys[i] for i in new], hashes[new], known


#: What ``erase`` deletes: (table, condition). ``{c}`` is the contact, ``{a}`` the cookies whose
#: anonymous history is the contact's (see ``_own_cookies``).
ERASE = (
    ("events", "contact_id = {c:String} "
               "OR (anonymous_id IN {a:Array(String)} AND pre_identification = 1)"),
    ("identities", "contact_id = {c:String} OR previous_contact_id = {c:String}"),
    ("score_changes", "contact_id = {c:String} OR anonymous_id IN {a:Array(String)}"),
    ("score_state", "contact_id = {c:String}"),
    ("triggers", "contact_id = {c:String} OR anonymous_id IN {a:Array(String)}"),
    ("trigger_decisions", "contact_id = {c:String} OR anonymous_id IN {a:Array(String)}"),
)  # fmt: skip

#: every table ``erase`` rewrites
ERASED_TABLES = (*(table for table, _ in ERASE), "contact_versions")

#: Cookies whose first link went to another contact: their anonymous history is that one's.
FIRST_LINKED_ELSEWHERE = (
    "SELECT anonymous_id FROM {db}.identities "
    "WHERE anonymous_id IN {a:Array(String)} AND contact_id != '' AND previous_contact_id = '' "
    "GROUP BY anonymous_id HAVING argMin(contact_id, at) != {c:String}"
)


def _own_cookies(client: Client, database: str, contact_id: str, cookies: list[str]) -> list[str]:
    """The erased contact's cookies whose anonymous history is theirs.

    A cookie re-linked to this contact from someone else (a shared computer) keeps its anonymous
    history with the contact of its first link (``contact_events``): erasing this contact must
    not delete another person's history.
    """
    if not cookies:
        return []
    elsewhere = {
        row[0]
        for row in client.query(
            FIRST_LINKED_ELSEWHERE.replace("{db}", database),
            parameters={"a": cookies, "c": contact_id},
        ).result_rows
    }
    return [aid for aid in cookies if aid not in elsewhere]


#: Key columns compared as epoch milliseconds (DateTime64(3) keeps milliseconds).
TIME_COLUMNS = {"at"}


@cache
def _key_function(table: str) -> Callable[[Row], tuple[Any, ...]]:
    """A row's key in ``table`` (``ROW_KEYS``): its key columns (times are epoch milliseconds in
    rows already, ``pipeline.sink.rows``)."""
    columns = TABLE_COLUMNS[table]
    key_columns, _ = ROW_KEYS[table]
    indexes = [columns.index(column) for column in key_columns]
    if len(indexes) == 1:
        (only,) = indexes
        return lambda row: (row[only],)
    getter: Callable[[Row], tuple[Any, ...]] = itemgetter(*indexes)  # several indexes: a tuple
    return getter


def _erase(client: Client, database: str, request: dict[str, Any]) -> int:
    contact_id = request["contact_id"]
    cookies = _own_cookies(client, database, contact_id, list(request.get("cookies") or []))
    params = {"c": contact_id, "a": cookies}
    deleted = 0
    for table, where in ERASE:
        deleted += int(client.query(
            f"SELECT count() FROM {database}.{table} WHERE {where}", parameters=params
        ).result_rows[0][0])  # fmt: skip
        _rewrite_without(client, database, table, where, params)
    # contact_versions holds the email
    deleted += int(client.query(
        f"SELECT count() FROM {database}.contact_versions WHERE contact_id = {{c:String}}",
        parameters=params).result_rows[0][0])  # fmt: skip
    _rewrite_without(client, database, "contact_versions", "contact_id = {c:String}", params)
    erasure_id = str(request.get("erasure_id") or "")
    digest = hashlib.sha256(f"{erasure_id}|{request['contact_id']}".encode()).hexdigest()
    client.insert(f"{database}.erasures", [(erasure_id, digest, _now(), deleted)],
                  column_names=["erasure_id", "contact_hash", "requested_at",
                                "rows_deleted"])  # fmt: skip
    return deleted


def _rewrite_without(
    client: Client, database: str, table: str, where: str, params: dict[str, Any]
) -> None:
    """Delete the rows by rewriting the parts that hold them (a mutation, waited for), not
    by masking them as a lightweight ``DELETE`` does: their bytes leave the active parts, and
    the parts they were in are removed ``old_parts_lifetime`` later (schemas/clickhouse/012:
    30 s, then ClickHouse's next cleanup, about 30 s)."""
    client.command(
        f"ALTER TABLE {database}.{table} DELETE WHERE {where}",
        parameters=params, settings={"mutations_sync": 2},
    )  # fmt: skip


#: schemas/clickhouse/012: how long a replaced part stays on disk (seconds)
OLD_PARTS_LIFETIME = 30
#: a partition no table has (an id without "_", which separates a part name's fields):
#: dropping it only makes ClickHouse clear outdated parts
NO_PARTITION = "nosuchpartition"


def _purge_outdated(client: Client, database: str, tables: Iterable[str]) -> None:
    """Remove the outdated parts of ``tables`` from disk now (embedded chDB only).

    A ClickHouse server deletes a replaced part ``old_parts_lifetime`` after it was replaced;
    chDB inside the worker process was seen to keep them for minutes beyond that (cause not
    found: a standalone chDB removes them on time). Dropping a partition clears a table's
    outdated parts at once, those past their lifetime: so the lifetime is 0 for that moment.
    ``os.sync`` first makes the parts that replaced them durable, which is what the lifetime
    protects (parts written by merges in the milliseconds between are not covered).
    """
    os.sync()
    for table in tables:
        name = f"{database}.{table}"
        client.command(f"ALTER TABLE {name} MODIFY SETTING old_parts_lifetime = 0")
        try:
            client.command(f"ALTER TABLE {name} DROP PARTITION ID '{NO_PARTITION}'")
        finally:
            client.command(
                f"ALTER TABLE {name} MODIFY SETTING old_parts_lifetime = {OLD_PARTS_LIFETIME}"
            )


def _now() -> datetime:
    return datetime.now(UTC)
