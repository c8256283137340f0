"""ClickHouse fixtures for the sink's tests: a migrated database of its own on the session's chDB
path (chDB allows one engine path per process), and a way to write rows straight into it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.clickhouse import ClickHouse
from pipeline.clickhouse.migrate import migrate


class Warehouse:
    """A migrated database on the session's chDB path."""

    def __init__(self, path: Path, database: str) -> None:
        self.url = f"chdb://{path}"
        self.database = database
        self.clickhouse = ClickHouse(self.url, database)
        self.clickhouse.call(lambda c: migrate(c, database))

    def insert(self, table: str, *rows: dict[str, Any]) -> None:
        """Insert rows given as ``{column: value}``, every row with the same columns."""
        columns = list(rows[0])
        assert all(list(row) == columns for row in rows), "give every row the same columns"
        values = [[row[column] for column in columns] for row in rows]
        self.clickhouse.call(
            lambda c: c.insert(f"{self.database}.{table}", values, column_names=columns)
        )

    def rows(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, with ``{db}`` replaced by this database."""
        text = sql.replace("{db}", self.database)
        return self.clickhouse.call(lambda c: c.query(text, parameters=parameters).result_rows)

    def close(self) -> None:
        self.clickhouse.close()


@pytest.fixture(scope="module")
def warehouse(chdb_session_path: Path) -> Iterator[Warehouse]:
    """A fresh migrated database for one test module."""
    warehouse = Warehouse(chdb_session_path, f"w_{uuid.uuid4().hex[:10]}")
    yield warehouse
    warehouse.close()
