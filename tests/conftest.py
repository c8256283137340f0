"""Fixtures shared by every test: the real Kafka broker (once per session), per-test topic
prefixes and Faust app ids, and a chDB path per session with a database per test.

Set ``MA_KAFKA_BOOTSTRAP`` to run against an existing broker instead of starting one.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


#: ports handed to servers in tests: below Linux's ephemeral range (32768-60999), so no outbound
#: connection (a Kafka client's, say) takes one between ``free_port()`` and the server's bind;
#: each pytest-xdist process draws from its own slice, so two test processes never share one
PORTS = range(20_000, 32_000)
_given: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on and no other test in this session was given."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slices = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    index = int(worker) if worker.isdigit() else 0
    size = len(PORTS) // slices
    mine = range(PORTS.start + index * size, PORTS.start + (index + 1) * size)
    for port in random.sample(mine, len(mine)):
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port left in {mine}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report shows the child processes it ran (``tests.processes``): their
    state and the end of their logs, so a worker that died mid-test says why (CI once showed
    only a refused connection to a worker that had been ready)."""
    from tests.processes import Process

    report = yield
    if report.failed and call.when in ("setup", "call"):
        for process in Process.open:
            if process.popen.poll() == 0:
                continue  # a command that finished as it should, never stopped by its test
            report.sections.append((f"process {' '.join(process.args)}", process.summary()))
    return report


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker for the session: ``MA_KAFKA_BOOTSTRAP``, or the local broker on free ports."""
    existing = os.environ.get("MA_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    from pipeline.broker import LocalBroker

    data = tmp_path_factory.mktemp("broker")
    settings = Settings(
        data_dir=data,
        cache_dir=REPO / ".cache",
        broker_port=free_port(),
        broker_controller_port=free_port(),
        broker_heap="768m",
    )
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def chdb_session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB path this test process may open (chDB: one engine path per process)."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(
    kafka_bootstrap: str, chdb_session_path: Path, tmp_path: Path, test_id: str
) -> Settings:
    """Settings of one test: its own topic prefix, app id, database and data folder."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{test_id}.",
        topic_partitions=4,
        app_id=f"test-{test_id}",
        clickhouse_url=f"chdb://{chdb_session_path}",
        clickhouse_database=f"t_{test_id}",
        data_dir=tmp_path / "data",
        cache_dir=REPO / ".cache",
        store="memory://",
        config=REPO / "config" / "rules.yaml",
        http_port=free_port(),
        worker_web_port=free_port(),
        link_secrets="k2:test-signing-secret-0002,k1:test-signing-secret-0001",  # type: ignore[arg-type]
    )


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Settings]:
    """Settings whose topics exist on the broker."""
    from pipeline.topics import ensure_topics

    await ensure_topics(settings)
    yield settings
