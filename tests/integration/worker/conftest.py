"""A real worker (``ma-pipeline worker`` in a child process) beside a real collector.

``stack`` is module-scoped: one collector, one worker and one topic prefix per test module; each
test uses its own cookies and emails, so tests stay independent while the worker starts once.
The worker owns its chDB path (one process per chDB path), so tests read ClickHouse through the
worker's API, as analysts do. Time is shared through a clock file (``MA_CLOCK_FILE``): the
collector stamps events with it and the worker fires delayed triggers by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline import codec, links
from pipeline.clock import FileClock
from pipeline.collect.app import Collector
from pipeline.lag import consumer_lag
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import REPO, free_port
from tests.integration.collect.conftest import RunningCollector, collector  # noqa: F401
from tests.kafka_helpers import TopicReader
from tests.processes import Process

READY = "worker ready"
SITE = "acme"
WRITE_KEY = "wk_acme_public_7d1f3a"
SERVER_KEY = "sk_acme_secret_4b9e0c6a2f8d"
CRM_KEY = "mak_example_crm_sync_change_me"  # config/rules.yaml's crm-sync: contacts:write
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36"


def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"clickhouse_url": f"chdb://{tmp_path / 'worker-ch'}"})


def start_worker(settings: Settings, log: Path) -> Process:
    process = Process(settings, "worker", log=log)
    process.wait_for_log(READY, timeout=90)
    return process


@pytest.fixture
def worker(topics: Settings, tmp_path: Path) -> Any:
    process = start_worker(worker_settings(topics, tmp_path), tmp_path / "worker.log")
    yield process
    process.stop()


async def query(settings: Settings, sql: str, **parameters: Any) -> list[list[Any]]:
    """Rows of a read-only query through the worker API."""
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{settings.worker_api}/query", data=codec.dumps({"sql": sql, "parameters": parameters})
        )
        body = codec.loads(await response.read())
        assert response.status == 200, body
        rows: list[list[Any]] = body["rows"]
        return rows


async def eventually(check: Callable[[], Any], timeout: float = 30, every: float = 0.3) -> Any:
    """Await ``check()`` until it returns something truthy (or fail with its last value)."""
    result = None
    async with asyncio.timeout(timeout):
        while True:
            try:
                result = await check()
            except AssertionError:
                result = None
            if result:
                return result
            await asyncio.sleep(every)


@dataclass
class Stack:
    """A collector and a worker on one topic prefix, with a shared, movable clock."""

    settings: Settings
    collector: Collector
    url: str
    http: aiohttp.ClientSession
    clock: FileClock
    worker: Process
    tmp: Path

    async def send(self, *events: dict[str, Any], server: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"site_id": SITE, "events": list(events)}
        headers = {"User-Agent": BROWSER_UA}
        if server:
            headers["Authorization"] = f"Bearer {SERVER_KEY}"
        else:
            body["write_key"] = WRITE_KEY
        response = await self.http.post(f"{self.url}/v1/batch", json=body, headers=headers)
        result: dict[str, Any] = await response.json()
        assert response.status == 200 and not result["rejected"], result
        return result

    async def contacts(self, source: str, *contacts: dict[str, Any]) -> None:
        response = await self.http.post(
            f"{self.url}/v1/contacts",
            json={"source": source, "contacts": list(contacts)},
            headers={"Authorization": f"Bearer {CRM_KEY}"},
        )
        assert response.status == 200, await response.text()

    async def click(
        self,
        aid: str | None,
        contact_id: str,
        *,
        url: str = "https://www.acme.example/offer",
        campaign: str = "spring",
        user_agent: str = BROWSER_UA,
    ) -> aiohttp.ClientResponse:
        token = links.sign(
            contact_id=contact_id,
            url=url,
            campaign_id=campaign,
            site_id=SITE,
            keys=self.settings.link_keys,
            now=self.clock.now() - timedelta(minutes=10),
        )
        headers = {"User-Agent": user_agent}
        if aid:
            headers["Cookie"] = f"ma_aid={aid}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            response = await http.get(
                f"{self.url}/c/{token}", headers=headers, allow_redirects=False
            )
            await response.read()
        return response

    def restart_worker(self, *, kill: bool = True) -> None:
        """``kill -9`` (or stop) the worker and start a new one on the same state."""
        if kill:
            self.worker.kill()
        else:
            self.worker.stop()
        log = self.tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.worker = start_worker(self.settings, log)

    async def lag(self) -> dict[str, int]:
        """Records not yet committed by the worker's consumer group, per input topic."""
        return (await consumer_lag(self.settings))[self.settings.app_id]

    async def quiescent(self, timeout: float = 120) -> None:
        """Wait until the worker has committed everything on its input topics."""
        last: dict[str, int] = {}

        async def idle() -> bool:
            nonlocal last
            last = await self.lag()
            return not any(last.values())

        try:
            await eventually(idle, timeout=timeout, every=0.5)
        except TimeoutError:
            import aiohttp as _aiohttp

            async with _aiohttp.ClientSession() as http:
                response = await http.get(f"{self.settings.worker_api}/debug/tasks")
                (self.tmp / "tasks.txt").write_text(await response.text())
                response = await http.get(f"{self.settings.worker_api}/debug/consumer")
                (self.tmp / "consumer.json").write_text(await response.text())
            raise AssertionError(f"the worker did not catch up: lag {last}") from None

    def advance(self, by: timedelta) -> None:
        self.clock.shift(by)

    def reader(self, topic: str) -> TopicReader:
        return TopicReader(self.settings.bootstrap, self.settings.topic(topic))

    async def query(self, sql: str, **parameters: Any) -> list[list[Any]]:
        return await query(
            self.settings, sql.replace("{db}", self.settings.clickhouse_database), **parameters
        )


def page_view(aid: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "page_view",
        "anonymous_id": aid,
        "event_id": str(uuid.uuid4()),
        "url": f"https://www.acme.example{path}",
        **extra,
    }


def new_aid() -> str:
    return str(uuid.uuid4())


def new_email(name: str = "person") -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@acme.io"


@contextlib.asynccontextmanager
async def open_stack(
    kafka_bootstrap: str,
    tmp: Path,
    store: str = "memory://",
    *,
    rules: str | None = None,
    **settings_: Any,
) -> AsyncIterator[Stack]:
    """A collector (in this process) and a worker (a child process) on a fresh topic prefix;
    the worker's tables in ``store`` (production's default is ``rocksdb://``); ``rules`` the
    rules file's text (else the example's); ``settings_`` override other settings."""
    test_id = uuid.uuid4().hex[:10]
    tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up, before anything runs
    clock_file = tmp / "clock"
    clock_file.write_text("0")
    rules_file = tmp / "rules.yaml"
    rules_file.write_text(rules or (REPO / "config" / "rules.yaml").read_text())
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"s{test_id}.",
        topic_partitions=4,
        app_id=f"stack-{test_id}",
        clickhouse_url=f"chdb://{tmp / 'worker-ch'}",
        clickhouse_database=f"s_{test_id}",
        data_dir=tmp / "data",
        cache_dir=REPO / ".cache",
        store=store,
        config=rules_file,
        http_port=free_port(),
        worker_web_port=free_port(),
        clock_file=clock_file,
        log_level=os.environ.get("MA_TEST_WORKER_LOG_LEVEL", "info"),
        link_secrets="k2:test-signing-secret-0002,k1:test-signing-secret-0001",  # type: ignore[arg-type]
        **settings_,
    )
    await ensure_topics(settings)
    clock = FileClock(clock_file)
    app_state = Collector(settings, RulesWatcher(settings.config), clock=clock)
    runner = web.AppRunner(app_state.make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
    process = await asyncio.to_thread(start_worker, settings, tmp / "worker.log")
    stack = None
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            stack = Stack(
                settings,
                app_state,
                f"http://127.0.0.1:{settings.http_port}",
                http,
                clock,
                process,
                tmp,
            )
            yield stack
    finally:
        (stack.worker if stack else process).stop()
        await runner.cleanup()


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with open_stack(kafka_bootstrap, tmp_path_factory.mktemp("stack")) as running:
        yield running
