"""The sink writes exactly once (CONTRACT §6) into chDB: a replayed batch, a replay with other
boundaries after a crash and a record the worker produced twice add no rows; while ClickHouse is
unavailable the writer retries without end and without dropping anything, and once it is back
every row arrives once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.clickhouse import ClickHouse
from pipeline.sink import SinkWriter, rows_for
from pipeline.sink.rows import ROW_KEYS
from pipeline.sink.stored import key_expression, key_hashes
from pipeline.sink.writer import ERASED_TABLES, OLD_PARTS_LIFETIME, TIME_COLUMNS
from pipeline.topics import CONTACT_WORK, DECISIONS
from tests.conftest import free_port
from tests.integration.sink.conftest import Warehouse

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
#: Tables whose rows are written exactly once, counted raw (no FINAL).
EXACT = ("events", "identities", "score_changes", "triggers")


@pytest.fixture
def warehouse(chdb_session_path: Path) -> Iterator[Warehouse]:
    """A fresh database per test (the counts below are of whole tables)."""
    warehouse = Warehouse(chdb_session_path, f"w_{uuid.uuid4().hex[:10]}")
    yield warehouse
    warehouse.close()


def topic_values(n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` cookies' worth of what the worker produces: an anonymous page view, a link, the
    identified event, the merged contact, two score changes and a trigger per cookie."""
    values: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        aid, contact = str(uuid.uuid4()), str(uuid.uuid4())
        at = T0 + timedelta(seconds=i)
        later = at + timedelta(milliseconds=1)
        view = {"event_id": str(uuid.uuid4()), "type": "page_view", "site_id": "acme",
                "received_at": at, "anonymous_id": aid, "url": "https://www.acme.example/pricing",
                "path": "/pricing", "pre_identification": True}  # fmt: skip
        identify = {**view, "event_id": str(uuid.uuid4()), "type": "identify",
                    "contact_id": contact, "received_at": later,
                    "pre_identification": False}  # fmt: skip
        values += [
            (CONTACT_WORK, {"k": "event", "e": view}),
            ("identities", {"anonymous_id": aid, "contact_id": contact, "reason": "identify",
                            "event_id": identify["event_id"], "at": later}),
            (CONTACT_WORK, {"k": "event", "e": identify}),
            ("contacts", {"contact_id": contact, "email": f"p{i}@acme.io", "attributes": {},
                          "consent_email": True, "updated_at": later}),
            ("scores", {"anonymous_id": aid, "contact_id": None, "score": 10, "delta": 10,
                        "rule": "pricing-view", "event_id": view["event_id"],
                        "lifecycle_stage": "lead", "at": at}),
            ("scores", {"contact_id": contact, "score": 10, "delta": 10,
                        "rule": "anonymous_history", "event_id": identify["event_id"],
                        "lifecycle_stage": "lead", "at": later}),
            ("triggers", {"trigger_id": str(uuid.uuid4()), "rule": "pricing-trial-offer",
                          "channel": "email", "contact_id": contact, "fired_at": later,
                          "due_at": later, "score": 10, "cause_event_ids": [view["event_id"]]}),
        ]  # fmt: skip
    return values


def rows_of(values: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, tuple[Any, ...]]]:
    return [row for topic, value in values for row in rows_for(topic, value)]


def counts(warehouse: Warehouse) -> dict[str, int]:
    """Raw row counts of the exactly-once tables, and visible rows of the versioned ones."""
    tables = [*EXACT, "contacts", "scores", "score_state"]
    return {t: warehouse.rows(f"SELECT count() FROM {{db}}.{t}")[0][0] for t in tables}


EXPECTED = {"events": 20, "identities": 10, "score_changes": 20, "triggers": 10, "contacts": 10,
            "scores": 10, "score_state": 10}  # fmt: skip


async def test_a_replayed_batch_adds_no_rows(warehouse: Warehouse) -> None:
    rows = rows_of(topic_values(10))
    writer = SinkWriter(warehouse.clickhouse)
    first = await writer.write(rows, "x.contact-work:0:0-19,scores:0:0-19")
    assert first["events"] == 20
    assert counts(warehouse) == EXPECTED
    again = await writer.write(rows, "x.contact-work:0:0-19,scores:0:0-19")
    assert {t: again[t] for t in EXACT} == dict.fromkeys(EXACT, 0)
    assert counts(warehouse) == EXPECTED  # score_state too: the token is remembered (008)


async def test_a_replay_with_other_boundaries_adds_no_rows(warehouse: Warehouse) -> None:
    values = topic_values(10)
    writer = SinkWriter(warehouse.clickhouse)
    await writer.write(rows_of(values[:40]), "t:0:0-39")  # then a crash before the commit
    await writer.write(rows_of(values[25:]), "t:0:25-69")  # the restarted worker's batch
    await writer.write(rows_of(values[:70]), "t:0:0-69")  # and one more, from the start
    assert {t: n for t, n in counts(warehouse).items() if t != "score_state"} == {
        t: n for t, n in EXPECTED.items() if t != "score_state"}  # fmt: skip


async def test_a_record_the_worker_produced_twice_is_one_row(warehouse: Warehouse) -> None:
    values = topic_values(10)
    writer = SinkWriter(warehouse.clickhouse)
    await writer.write(rows_of(values + values[:14]), "t:0:0-83")  # twice within a batch
    await writer.write(rows_of(values[14:28]), "t:0:84-97")  # and again at later offsets
    assert {t: n for t, n in counts(warehouse).items() if t in EXACT} == {
        t: EXPECTED[t] for t in EXACT}  # fmt: skip


async def test_clickhouse_unavailable_then_back_every_row_arrives_once(
    warehouse: Warehouse,
) -> None:
    rows = rows_of(topic_values(10))
    dead = ClickHouse(f"http://127.0.0.1:{free_port()}", warehouse.database)
    retries: list[str] = []
    writer = SinkWriter(dead, on_retry=lambda table, exc: retries.append(table), max_backoff=0.05)
    writing = asyncio.create_task(writer.write(rows, "t:0:0-69"))
    async with asyncio.timeout(30):
        while len(retries) < 5:
            await asyncio.sleep(0.02)
    assert not writing.done()  # it keeps retrying; nothing is acknowledged, nothing dropped
    assert counts(warehouse)["events"] == 0
    writer.clickhouse = warehouse.clickhouse  # ClickHouse is back
    written = await asyncio.wait_for(writing, 30)
    dead.close()
    assert sum(written.values()) == len(rows)
    assert counts(warehouse) == EXPECTED
    # the worker replays the batch it could not commit: nothing more arrives
    replay = SinkWriter(warehouse.clickhouse)
    await replay.write(rows, "t:0:0-69")
    assert counts(warehouse) == EXPECTED
    await replay.write(rows[5:], "t:0:5-69")  # other boundaries: score_state is read via FINAL
    assert {t: n for t, n in counts(warehouse).items() if t != "score_state"} == {
        t: n for t, n in EXPECTED.items() if t != "score_state"}  # fmt: skip


async def test_the_filter_hashes_keys_as_clickhouse_does(warehouse: Warehouse) -> None:
    attempt = {"trigger_id": "t-1", "destination": "crm", "attempt": 2, "status": "retrying",
               "http_status": 503, "error": "HTTP 503", "at": T0,
               "next_attempt_at": T0 + timedelta(seconds=5)}  # fmt: skip
    decision = {"contact_id": None, "anonymous_id": "aid-1", "at": T0, "rule": "offer",
                "decision": "skipped", "reason": "once_per", "event_id": "e-1"}  # fmt: skip
    values = [*topic_values(5), ("deliveries", attempt), (DECISIONS, decision)]
    await SinkWriter(warehouse.clickhouse).write(rows_of(values), "t:0:0-35")
    for table, (columns, _) in ROW_KEYS.items():
        expression = key_expression(columns, TIME_COLUMNS)
        selected = ", ".join(
            f"toUnixTimestamp64Milli({c})" if c in TIME_COLUMNS else c for c in columns
        )
        stored = warehouse.rows(f"SELECT {selected}, {expression} FROM {{db}}.{table}")
        assert stored, table
        keys = [tuple(row[:-1]) for row in stored]
        assert [int(h) for h in key_hashes(keys)] == [row[-1] for row in stored], table


async def test_a_restarted_writer_still_stores_nothing_twice_and_new_keys_ask_nothing(
    warehouse: Warehouse,
) -> None:
    values = topic_values(10)
    await SinkWriter(warehouse.clickhouse).write(rows_of(values[:40]), "t:0:0-39")
    restarted = SinkWriter(warehouse.clickhouse)  # loads the stored keys from the tables
    await restarted.write(rows_of(values[20:]), "t:0:20-69")  # a replay, other boundaries
    assert {t: n for t, n in counts(warehouse).items() if t in EXACT} == {
        t: EXPECTED[t] for t in EXACT}  # fmt: skip
    asked = restarted.lookups
    assert asked >= 10  # the repeats were looked up (the filter may hold them) ...
    await restarted.write(rows_of(topic_values(10)), "t:0:70-139")
    assert restarted.lookups - asked <= 1  # ... new keys are ruled out (about 1 in 100,000 not)
    assert counts(warehouse)["events"] == 40
    restarted.forget_stored()  # after a rebalance: loaded again
    await restarted.write(rows_of(values), "t:0:0-69")
    assert counts(warehouse)["events"] == 40


async def test_an_erasure_leaves_no_part_that_held_the_person_and_keeps_the_lifetime(
    warehouse: Warehouse,
) -> None:
    """Embedded chDB: ``erase`` rewrites the parts holding the person and removes the parts
    they replaced at once (a server would after ``old_parts_lifetime``), which is set back."""
    values = topic_values(3)
    await SinkWriter(warehouse.clickhouse).write(rows_of(values), "t:0:0-20")
    contact = next(v["contact_id"] for topic, v in values if topic == "contacts")
    aid = next(v["anonymous_id"] for topic, v in values if topic == "identities")
    deleted = await SinkWriter(warehouse.clickhouse).erase(
        {"contact_id": contact, "cookies": [aid], "erasure_id": "e-1"}
    )
    assert deleted >= 5
    left = warehouse.rows(
        "SELECT count() FROM {db}.events "
        "WHERE contact_id = {c:String} OR anonymous_id = {a:String}",
        c=contact, a=aid)  # fmt: skip
    assert left == [(0,)]
    outdated = warehouse.rows(
        "SELECT table, name FROM system.parts WHERE database = {d:String} AND NOT active "
        "AND table IN {t:Array(String)}", d=warehouse.database, t=list(ERASED_TABLES))  # fmt: skip
    assert outdated == []
    for table in ERASED_TABLES:
        [(create,)] = warehouse.rows(f"SHOW CREATE TABLE {{db}}.{table}")
        assert f"old_parts_lifetime = {OLD_PARTS_LIFETIME}" in create, table
