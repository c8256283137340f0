"""A real collector on a loopback port, in this process, writing to the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from pipeline.collect.app import Collector
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings

SITE = "acme"
WRITE_KEY = "wk_acme_public_7d1f3a"
SERVER_KEY = "sk_acme_secret_4b9e0c6a2f8d"
ORIGIN = "http://localhost:8000"
AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"


@dataclass
class RunningCollector:
    url: str
    collector: Collector
    settings: Settings
    http: aiohttp.ClientSession

    async def post_batch(
        self, events: list[object], *, headers: dict[str, str] | None = None, **envelope: object
    ) -> aiohttp.ClientResponse:
        body = {"site_id": SITE, "write_key": WRITE_KEY, **envelope, "events": events}
        response = await self.http.post(f"{self.url}/v1/batch", json=body, headers=headers or {})
        await response.read()
        return response


@pytest.fixture
async def collector(topics: Settings) -> AsyncIterator[RunningCollector]:
    app_state = Collector(topics, RulesWatcher(topics.config))
    runner = web.AppRunner(app_state.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", topics.http_port)
    await site.start()
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        yield RunningCollector(f"http://127.0.0.1:{topics.http_port}", app_state, topics, http)
    await runner.cleanup()
