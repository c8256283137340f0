"""The sink writer without ClickHouse: while inserts fail it keeps retrying with backoff and never
returns (the batch stays unacknowledged); once they work, every row is written, and the
deduplication token names the rows, so a retry after a partial failure is not taken for the
earlier insert. (Against chDB: ``tests/integration/sink/test_writer.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.sink import SinkWriter

ROW = ("e1", "page_view")


class FakeResult:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


class FakeClient:
    """Records inserts; ``query`` answers "nothing stored yet"."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[tuple[Any, ...]], str]] = []
        self.described: list[str] = []  # the tables whose column types were asked

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        self.described.append(table)
        return type("Context", (), {"column_types": [f"type of {c}" for c in column_names]})

    def query(self, sql: str, parameters: dict[str, Any]) -> FakeResult:
        return FakeResult([])

    def query_np(self, sql: str) -> np.ndarray[Any, Any]:
        return np.zeros(0, dtype=np.uint64)  # the stored keys: none

    def insert(self, table: str, rows: list[tuple[Any, ...]], column_names: list[str],
               column_types: list[Any], settings: dict[str, Any]) -> None:  # fmt: skip
        assert column_types == [f"type of {c}" for c in column_names]
        self.inserts.append((table, rows, settings["insert_deduplication_token"]))


class FlakyClickHouse:
    """A ``ClickHouse`` whose calls fail while ``down`` is set."""

    database = "ma"

    def __init__(self) -> None:
        self.client = FakeClient()
        self.down = True
        self.calls = 0
        self.resets = 0

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("ClickHouse is not there")
        return fn(self.client)

    def reset(self) -> None:
        self.resets += 1


async def test_an_unavailable_clickhouse_is_retried_until_it_is_back() -> None:
    clickhouse = FlakyClickHouse()
    retries: list[str] = []
    writer = SinkWriter(clickhouse, on_retry=lambda table, exc: retries.append(table),  # type: ignore[arg-type]
                        max_backoff=0.02)  # fmt: skip
    writer_backoff = asyncio.create_task(writer.write([("events", ROW)], "events:0:0-0"))
    while len(retries) < 3:
        await asyncio.sleep(0.01)
    assert not writer_backoff.done()  # never gives up, never drops the batch
    assert clickhouse.resets >= 2  # reconnects between attempts
    clickhouse.down = False
    assert await asyncio.wait_for(writer_backoff, 5) == {"events": 1}
    assert [(t, r) for t, r, _ in clickhouse.client.inserts] == [("ma.events", [ROW])]
    assert set(retries) == {"events"}


async def test_the_token_names_the_rows_of_the_batch() -> None:
    clickhouse = FlakyClickHouse()
    clickhouse.down = False
    writer = SinkWriter(clickhouse)  # type: ignore[arg-type]
    await writer.write([("score_state", ("c1", 1.0, "lead", None))], "scores:0:0-1")
    await writer.write([("score_state", ("c1", 1.0, "lead", None))], "scores:0:0-1")
    await writer.write([("score_state", ("c2", 1.0, "lead", None))], "scores:0:0-1")
    tokens = [token for _, _, token in clickhouse.client.inserts]
    assert tokens[0] == tokens[1]  # a replay: ClickHouse drops it
    assert tokens[2] != tokens[0]  # other rows under the same offsets: not a replay


async def test_rows_repeated_within_a_batch_are_written_once() -> None:
    clickhouse = FlakyClickHouse()
    clickhouse.down = False
    writer = SinkWriter(clickhouse)  # type: ignore[arg-type]
    rows = [("triggers", ("t1", "r")), ("triggers", ("t1", "r")), ("triggers", ("t2", "r"))]
    assert await writer.write(rows, "triggers:0:0-2") == {"triggers": 2}


async def test_column_types_are_asked_once_per_table_and_again_after_a_failure() -> None:
    """clickhouse-connect would run a ``DESCRIBE TABLE`` before every insert."""
    clickhouse = FlakyClickHouse()
    clickhouse.down = False
    writer = SinkWriter(clickhouse, max_backoff=0.01)  # type: ignore[arg-type]
    for n in range(3):
        await writer.write([("events", (f"e{n}", "page_view"))], f"events:0:{n}-{n}")
    await writer.write([("score_state", ("c1", 1.0, "lead", None))], "scores:0:0-0")
    assert clickhouse.client.described == ["ma.events", "ma.score_state"]

    fail_once = clickhouse.client.insert

    def failing(*args: Any, **kwargs: Any) -> None:
        clickhouse.client.insert = fail_once  # type: ignore[method-assign]
        raise ConnectionResetError("the server went away")

    clickhouse.client.insert = failing  # type: ignore[method-assign]
    await writer.write([("events", ("e9", "page_view"))], "events:0:9-9")
    assert clickhouse.client.described[2:] == ["ma.events"]  # asked again: it may have changed
    assert len(clickhouse.client.inserts) == 5
