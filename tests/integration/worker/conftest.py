"""A real worker (``ma-pipeline worker`` in a child process) beside a real collector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.integration.collect.conftest import RunningCollector, collector  # noqa: F401
from tests.processes import Process

READY = "worker ready"


def start_worker(settings: Settings, log: Path) -> Process:
    process = Process(settings, "worker", log=log)
    process.wait_for_log(READY, timeout=90)
    return process


@pytest.fixture
def worker(topics: Settings, tmp_path: Path) -> Iterator[Process]:
    process = start_worker(topics, tmp_path / "worker.log")
    yield process
    process.stop()
