"""Long soaks (``make soak``, not part of ``make test``): fresh starts and ``kill -9`` cycles.

- 30 fresh deployments in a row (new app id, topics, data folder), half of them with two
  workers: each must fire a 2 s delayed trigger, on every worker.
- 20 ``kill -9`` → restart cycles while a CPU hog keeps both cores busy: each cycle must catch
  up with every event stored exactly once in ClickHouse.

Figures go to ``soak/results.json`` (runs, failures, the longest catch-up).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pipeline import contact_id_for
from tests.conftest import REPO, free_port
from tests.integration.worker.conftest import (
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
    page_view,
    start_worker,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("MA_SOAK"), reason="a soak: make soak"),
]

RESULTS = REPO / "soak" / "results.json"
FRESH_STARTS = int(os.environ.get("MA_SOAK_FRESH_STARTS", "30"))
KILL_CYCLES = int(os.environ.get("MA_SOAK_KILL_CYCLES", "20"))
FOLLOWUP = {
    "id": "soak-followup",
    "when": {"event": {"type": "page_view", "url": "/soak*"}},
    "delay": "2s",
    "channel": "sales",
    "requires": ["identified"],
}


def record(name: str, figures: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {**figures, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def with_followup() -> str:
    """The example rules plus a trigger 2 s after a view of ``/soak*``."""
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["triggers"]["rules"].append(FOLLOWUP)
    return str(yaml.safe_dump(rules, sort_keys=False))


async def fired_by(settings: Any) -> float:
    """``triggers_fired`` as counted by the worker whose API ``settings`` name."""
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{settings.worker_api}/metrics")
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ma_worker_decisions_total") and 'what="triggers_fired"' in line
    )


async def one_fresh_start(kafka_bootstrap: str, tmp: Path, workers: int) -> dict[str, Any]:
    started = time.monotonic()
    async with open_stack(kafka_bootstrap, tmp, rules=with_followup()) as stack:
        others = []
        settings = [stack.settings]
        for n in range(2, workers + 1):
            each = stack.settings.model_copy(
                update={"data_dir": tmp / f"data-{n}", "worker_web_port": free_port(),
                        "sink": False}
            )  # fmt: skip
            others.append(await asyncio.to_thread(start_worker, each, tmp / f"worker-{n}.log"))
            settings.append(each)
        try:
            people = []
            for _ in range(16):  # enough contacts for every partition, so every worker
                email, aid = new_email("soak"), new_aid()
                await stack.send({"type": "identify", "anonymous_id": aid, "email": email})
                await stack.send(page_view(aid, "/soak/offer"))
                people.append(str(contact_id_for(email)))
            async with stack.reader("triggers") as reader:
                await reader.wait_for(
                    lambda vs: (
                        {v["contact_id"] for v in vs if v["rule"] == FOLLOWUP["id"]} >= set(people)
                    ),
                    timeout=60,
                )

            # a worker counts a trigger once it is durable, just after consumers can see it
            async def counted() -> bool:
                return sum([await fired_by(s) for s in settings]) >= len(people)

            await eventually(counted, timeout=30)
            per_worker = [await fired_by(s) for s in settings]
        finally:
            for other in others:
                other.stop()
    return {
        "workers": workers,
        "seconds": round(time.monotonic() - started, 1),
        "fired_per_worker": per_worker,
        "ok": all(n > 0 for n in per_worker),
    }


async def test_fresh_starts_fire_delayed_triggers_on_every_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runs, failures = [], []
    started = time.monotonic()
    for n in range(FRESH_STARTS):
        workers = 2 if n % 2 else 1
        try:
            run = await one_fresh_start(kafka_bootstrap, tmp_path / f"start-{n}", workers)
        except Exception as exc:  # a failed start is a figure, then a failure
            run = {"workers": workers, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        runs.append(run)
        if not run["ok"]:
            failures.append(n)
    record(
        "fresh_starts",
        {
            "runs": len(runs),
            "failures": failures,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "runs_detail": runs,
        },
    )
    assert not failures, [runs[n] for n in failures]


def cpu_hogs() -> list[subprocess.Popen[bytes]]:
    """A busy loop on every core (``stress-ng`` when installed)."""
    cores = os.cpu_count() or 2
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


async def test_kill_9_cycles_under_cpu_load_store_every_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    hogs = cpu_hogs()
    cycles = []
    try:
        async with open_stack(kafka_bootstrap, tmp_path / "kill") as stack:
            accepted = 0
            for _ in range(KILL_CYCLES):
                events = []
                for _cookie in range(40):
                    aid = new_aid()
                    events += [page_view(aid, f"/p/{i}") for i in range(5)]
                half = len(events) // 2
                await send_all(stack, events[:half])
                await asyncio.sleep(0.2)
                killed = time.monotonic()
                await asyncio.gather(
                    asyncio.to_thread(stack.restart_worker, kill=True),
                    send_all(stack, events[half:]),
                )
                accepted += len(events)

                async def caught_up(total: int = accepted) -> bool:
                    [[rows, unique]] = await stack.query(
                        "SELECT count(), uniqExact(event_id) FROM {db}.events"
                    )
                    assert rows == unique, (rows, unique)  # never twice
                    return bool(rows == total)

                await eventually(caught_up, timeout=180, every=0.5)
                cycles.append(round(time.monotonic() - killed, 1))
    finally:
        for hog in hogs:
            hog.kill()
        record(
            "kill_9_under_cpu_load",
            {
                "cycles": len(cycles),
                "wanted": KILL_CYCLES,
                "longest_catch_up_s": max(cycles, default=None),
                "catch_up_s": cycles,
            },
        )
    assert len(cycles) == KILL_CYCLES


async def send_all(stack: Stack, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 25):
        await stack.send(*events[start : start + 25])
