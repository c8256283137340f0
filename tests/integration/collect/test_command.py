"""``ma-pipeline collector``, the command operators run: it creates the topics, serves, answers
readiness, writes accepted events to ``ma.events``, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from pipeline.settings import Settings
from tests.conftest import REPO
from tests.integration.collect.conftest import AID, SITE, WRITE_KEY, read_topic

pytestmark = pytest.mark.integration


def start_collector(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "collector"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


async def test_the_collector_command_serves_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MA_")}
    env |= {**settings.as_env(), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "collector.log"
    url = f"http://127.0.0.1:{settings.http_port}"
    popen = start_collector(env, log)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):  # the topics are created first (this test's prefix is new)
                assert popen.poll() is None, log.read_text()
                try:
                    async with http.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"not ready after 30 s:\n{log.read_text()}")

            event_id = str(uuid.uuid4())
            view = {"event_id": event_id, "type": "page_view", "anonymous_id": AID,
                    "url": "https://www.acme.example/pricing"}  # fmt: skip
            body = {"site_id": SITE, "write_key": WRITE_KEY, "events": [view]}
            async with http.post(f"{url}/v1/batch", json=body) as response:
                assert response.status == 200
                assert await response.json() == {"accepted": 1, "rejected": []}

        (message,) = await read_topic(settings, "events")
        assert message.key == AID.encode()
        assert message.value["event_id"] == event_id

        popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(popen.wait, 20) == 0
        assert "collector stopped" in log.read_text()
    finally:
        if popen.poll() is None:
            popen.kill()
