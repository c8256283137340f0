"""CONTRACT §7 ``sink``: the ClickHouse sink as a process of its own, beside a worker that runs
without it (``MA_SINK=false``). With embedded chDB the sink process owns the files and answers
queries on its API; killed with ``kill -9`` mid-stream and restarted, it still stores every row
exactly once (CONTRACT §6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from pipeline.lag import consumer_lag
from pipeline.settings import Settings
from tests.conftest import free_port
from tests.integration.worker.conftest import eventually, open_stack
from tests.integration.worker.test_sink_exactly_once import play, stored_exactly_once, workload
from tests.processes import Process

pytestmark = pytest.mark.integration


def start_sink(settings: Settings, log: Path) -> Process:
    process = Process(settings, "sink", log=log)
    process.wait_for_log("sink consuming", timeout=90)
    return process


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_sink_process_beside_a_worker_without_sink_stores_every_row_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    sink_api = f"http://127.0.0.1:{port}"
    actions = workload(seed=23)
    half = len(actions) // 2
    # the worker does not open chDB (MA_SINK=false); queries go to the sink's API
    async with open_stack(
        kafka_bootstrap, tmp_path, sink=False, sink_web_port=port, worker_url=sink_api
    ) as stack:
        sink = start_sink(stack.settings, tmp_path / "sink-1.log")
        try:
            accepted = await play(stack, actions[:half])
            # kill -9 while the sink gathers or writes a batch, traffic going on
            await asyncio.sleep(0.5)
            sink.kill()
            more, sink = await asyncio.gather(
                play(stack, actions[half:]),
                asyncio.to_thread(start_sink, stack.settings, tmp_path / "sink-2.log"),
            )
            accepted += more
            await stack.quiescent()
            await stored_exactly_once(stack, actions, accepted)

            # its own metrics; the worker writes nothing to ClickHouse
            text = await metrics(sink_api)
            assert 'ma_sink_rows_total{table="events"}' in text
            worker_metrics = await metrics(f"http://127.0.0.1:{stack.settings.worker_web_port}")
            assert "ma_sink_rows_total" not in worker_metrics

            # `ma-pipeline lag` counts the sink's group, which catches up
            async def sink_caught_up() -> bool:
                lags = await consumer_lag(stack.settings)
                return f"{stack.settings.app_id}-sink" in lags and not any(
                    lags[f"{stack.settings.app_id}-sink"].values()
                )

            await eventually(sink_caught_up, timeout=60)
        finally:
            assert sink.stop() == 0, sink.text()[-3000:]
