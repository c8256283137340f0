"""CONTRACT §7 "``query`` is read-only, and a refused statement changes nothing for later queries
or for the sink": through the worker API that owns embedded chDB, a ``DROP TABLE`` is refused
with ClickHouse's reason on one line (no query text, no appended settings), as are deletes,
truncation, optimisation, settings changes and a second statement; afterwards queries answer
and the sink still writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.warehouse import QueryError, run_query
from tests.integration.worker.conftest import eventually, new_aid, open_stack, page_view

pytestmark = pytest.mark.integration


async def test_a_refused_statement_changes_nothing_for_later_queries_or_the_sink(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with open_stack(kafka_bootstrap, tmp_path) as stack:
        db = stack.settings.clickhouse_database
        await stack.send(page_view(new_aid(), "/pricing"))

        async def stored(n: int) -> bool:
            [[count]] = await stack.query("SELECT count() FROM {db}.events")
            return bool(count == n)

        await eventually(lambda: stored(1), timeout=60)
        refused_statements = (
            f"DROP TABLE {db}.events",
            f"INSERT INTO {db}.events (event_id) VALUES ('x')",
        )
        for statement in refused_statements:
            with pytest.raises(QueryError) as refused:
                await run_query(stack.settings, statement)
            message = str(refused.value)
            assert "readonly" in message and "\n" not in message
            assert "SETTINGS" not in message and "max_result_rows" not in message
        # whatever the statement tries, it is refused in one line and nothing changes
        for statement in (
            f"ALTER TABLE {db}.events DELETE WHERE 1",
            f"TRUNCATE TABLE {db}.events",
            f"OPTIMIZE TABLE {db}.events FINAL",
            "SET readonly = 0",
            f"SELECT count() FROM {db}.events SETTINGS readonly = 0",
            f"SELECT 1; DROP TABLE {db}.events",
        ):
            with pytest.raises(QueryError) as refused:
                await run_query(stack.settings, statement)
            message = str(refused.value)
            assert message and "\n" not in message and "max_result_rows" not in message, message
            [[count]] = await stack.query("SELECT count() FROM {db}.events")
            assert count == 1, statement
        # later queries answer, and the sink's next insert lands
        assert (await run_query(stack.settings, f"SELECT count() FROM {db}.events"))[1] == [[1]]
        await stack.send(page_view(new_aid(), "/blog"))
        await eventually(lambda: stored(2), timeout=60)
