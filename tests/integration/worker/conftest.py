"""A real worker (``ma-pipeline worker`` in a child process) beside a real collector.

The worker owns its own chDB path (one process per chDB path), so tests read ClickHouse
through the worker's API, as analysts do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import codec
from pipeline.settings import Settings
from tests.integration.collect.conftest import RunningCollector, collector  # noqa: F401
from tests.processes import Process

READY = "worker ready"


def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"clickhouse_url": f"chdb://{tmp_path / 'worker-ch'}"})


def start_worker(settings: Settings, log: Path) -> Process:
    process = Process(settings, "worker", log=log)
    process.wait_for_log(READY, timeout=90)
    return process


@pytest.fixture
def worker(topics: Settings, tmp_path: Path) -> Iterator[Process]:
    process = start_worker(worker_settings(topics, tmp_path), tmp_path / "worker.log")
    yield process
    process.stop()


async def query(settings: Settings, sql: str, **parameters: Any) -> list[list[Any]]:
    """Rows of a read-only query through the worker API."""
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{settings.worker_api}/query",
                                   data=codec.dumps({"sql": sql, "parameters": parameters}))
        body = codec.loads(await response.read())
        assert response.status == 200, body
        rows: list[list[Any]] = body["rows"]
        return rows
