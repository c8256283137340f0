"""Embedded ClickHouse (chDB) through clickhouse-connect: migrate is idempotent, rows round-trip,
and a replayed insert with the same deduplication token adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.clickhouse import ClickHouse, connect
from pipeline.clickhouse.migrate import load_migrations, migrate
from pipeline.settings import Settings
from pipeline.warehouse import read

pytestmark = pytest.mark.integration

TABLES = {
    "events",
    "identities",
    "contacts",
    "scores",
    "score_changes",
    "triggers",
    "deliveries",
    "contact_events",
}


@pytest.fixture(scope="session")
def clickhouse(chdb_session_path: object) -> ClickHouse:
    client = ClickHouse(f"chdb://{chdb_session_path}", "unused")
    yield client  # type: ignore[misc]
    client.close()


def test_migrate_creates_every_contract_table_once(
    clickhouse: ClickHouse, settings: Settings
) -> None:
    db = settings.clickhouse_database
    applied = clickhouse.call(lambda c: migrate(c, db))
    assert applied == [m.name for m in load_migrations(db)]
    assert clickhouse.call(lambda c: migrate(c, db)) == []
    tables = {
        row[0] for row in clickhouse.call(lambda c: c.query(f"SHOW TABLES FROM {db}").result_rows)
    }
    assert tables >= TABLES


def test_rows_round_trip_and_replayed_batches_add_nothing(
    clickhouse: ClickHouse, settings: Settings
) -> None:
    db = settings.clickhouse_database
    clickhouse.call(lambda c: migrate(c, db))
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    rows = [
        (f"e{i}", "page_view", "acme", at, "browser", "aid", "", 1, "/pricing") for i in range(100)
    ]
    columns = [
        "event_id",
        "type",
        "site_id",
        "received_at",
        "source",
        "anonymous_id",
        "contact_id",
        "pre_identification",
        "path",
    ]
    for _ in range(2):
        clickhouse.call(
            lambda c: c.insert(
                f"{db}.events",
                rows,
                column_names=columns,
                settings={"insert_deduplication_token": "batch-1"},
            )
        )
    count = clickhouse.call(lambda c: c.query(f"SELECT count() FROM {db}.events").result_rows)
    assert count == [(100,)]
    found = clickhouse.call(
        lambda c: (
            c.query(
                f"SELECT path FROM {db}.events WHERE event_id = {{id:String}}",
                parameters={"id": "e7"},
            ).result_rows
        )
    )
    assert found == [("/pricing",)]


async def test_the_async_wrapper_keeps_the_event_loop_free(settings: Settings) -> None:
    clickhouse = connect(settings)
    try:
        assert await clickhouse.run(lambda c: c.query("SELECT 1").result_rows) == [(1,)]
    finally:
        clickhouse.close()


def test_a_server_url_without_a_server_fails_clearly() -> None:
    clickhouse = ClickHouse("http://127.0.0.1:1", "ma")
    with pytest.raises(Exception, match=r"(?i)connect|refused|error"):
        clickhouse.call(lambda c: c.query("SELECT 1"))
    clickhouse.close()


def test_a_query_with_no_rows_still_names_its_columns(
    clickhouse: ClickHouse, settings: Settings
) -> None:
    db = settings.clickhouse_database
    clickhouse.call(lambda c: migrate(c, db))
    sql = f"SELECT event_id, path AS page FROM {db}.events WHERE site_id = {{s:String}}"
    columns, rows = clickhouse.call(lambda c: read(c, sql, {"s": "nobody"}, {"readonly": 1}))
    assert (columns, rows) == (["event_id", "page"], [])


def test_the_segments_benchmark_fills_the_current_schema(
    clickhouse: ClickHouse, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make bench`'s segments section fills every table it counts over with SQL of its own:
    # a column added by a migration must not break it (it did: user_id, identity_refused)
    import bench.segments

    db = settings.clickhouse_database
    monkeypatch.setattr(bench.segments, "DATABASE", db)
    clickhouse.call(lambda c: migrate(c, db))
    counts = clickhouse.call(lambda c: bench.segments._fill(c, contacts=200, events=2_000))
    assert counts["events"] == 2_000 and counts["contact_versions"] > 0, counts
