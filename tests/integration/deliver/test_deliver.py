"""CONTRACT §5 ``destinations``: ``ma-pipeline deliver`` POSTs each matching trigger to real
local HTTP receivers (aiohttp servers in this test), signed per Standard Webhooks (verified with
the ``standardwebhooks`` library), retried with backoff, never following a redirect; every
attempt is a record on ``ma.deliveries``; a receiver that is down does not delay another;
pending retries survive ``kill -9`` (same ``webhook-id``, delivered at least once)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook

from pipeline import codec
from pipeline.settings import Settings
from pipeline.sink.main import build_sink
from tests.conftest import REPO, free_port
from tests.integration.sink.conftest import Warehouse
from tests.kafka_helpers import TopicReader
from tests.processes import Process

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BEHAVIOURS = ("ok", "flaky", "slow", "gone", "redirect", "down", "stubborn", "broken")


@dataclass
class Receiver:
    """A webhook receiver whose answer depends on its behaviour and the attempt."""

    behaviour: str
    port: int = field(default_factory=free_port)
    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    delivered: dict[str, Any] = field(default_factory=dict)
    followed: int = 0
    failing_until: float = 0.0  # "down" / "stubborn": loop time until which it fails
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        trigger = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
        webhook_id = request.headers["webhook-id"]
        assert webhook_id == trigger["trigger_id"]
        calls = self.calls[webhook_id]
        calls.append(time.monotonic())
        if self.behaviour == "flaky" and len(calls) <= 3:
            return web.Response(status=500)
        if self.behaviour == "slow" and len(calls) == 1:
            await asyncio.sleep(3)  # past the destination's 1 s timeout
        if self.behaviour == "gone":
            return web.Response(status=410)
        if self.behaviour == "broken":  # for ever (its destination retries for 2 s only)
            return web.Response(status=500)
        if self.behaviour == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/elsewhere")
        if self.behaviour == "stubborn" and time.monotonic() < self.failing_until:
            return web.Response(status=503, headers={"Retry-After": "1"})
        self.delivered[webhook_id] = trigger
        return web.Response(status=204)

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.followed += 1
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        app.router.add_post("/elsewhere", self.elsewhere)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def rules_text(receivers: dict[str, Receiver]) -> str:
    lines = ["triggers:", "  rules:"]
    for name in receivers:
        lines.append(f"    - {{id: to-{name}, when: {{event: {{type: page_view}}}}, channel: web}}")
    lines.append("destinations:")
    for name, receiver in receivers.items():
        lines.append(
            f"  - {{id: {name}, url: 'http://127.0.0.1:{receiver.port}/hook', rules: [to-{name}],"
            " secret_env: HOOK_SECRET, timeout: 1s,"
            f" retry_for: {'2s' if name == 'broken' else '10m'},"
            " backoff: {first: 0.3s, max: 2s}}"
        )
    return "\n".join(lines) + "\n"


def trigger(rule: str) -> dict[str, Any]:
    return {
        "trigger_id": str(uuid.uuid4()),
        "rule": rule,
        "channel": "web",
        "anonymous_id": str(uuid.uuid4()),
        "fired_at": "2026-03-03T09:05:00.000Z",
        "due_at": "2026-03-03T09:05:00.000Z",
        "score": 3.0,
        "cause_event_ids": [],
        "attributes": {},
    }


@dataclass
class Delivery:
    settings: Settings
    receivers: dict[str, Receiver]
    tmp: Path
    process: Process | None = None

    def start(self) -> None:
        self.process = Process(
            self.settings,
            "deliver",
            log=self.tmp / f"deliver-{uuid.uuid4().hex[:4]}.log",
            env={"HOOK_SECRET": SECRET},
        )
        self.process.wait_for_log("delivering", timeout=90)

    async def send(self, *triggers: dict[str, Any]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all")
        await producer.start()
        try:
            for t in triggers:
                key = t["anonymous_id"].encode()
                await producer.send_and_wait(
                    self.settings.topic("triggers"), codec.dumps(t), key=key
                )
        finally:
            await producer.stop()

    async def records(self, topic: str) -> list[Any]:
        async with TopicReader(self.settings.bootstrap, self.settings.topic(topic)) as reader:
            await reader.settle(1.0)
        return reader.values


@pytest.fixture
async def delivery(topics: Settings, tmp_path: Path) -> AsyncIterator[Delivery]:
    receivers = {name: Receiver(name) for name in BEHAVIOURS}
    for receiver in receivers.values():
        if receiver.behaviour != "down":
            await receiver.start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(receivers))
    settings = topics.model_copy(update={"config": rules, "deliver_web_port": free_port()})
    running = Delivery(settings, receivers, tmp_path)
    await asyncio.to_thread(running.start)
    try:
        yield running
    finally:
        if running.process is not None:
            running.process.stop()
        for receiver in receivers.values():
            await receiver.stop()


async def until(check: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def test_each_answer_gets_what_the_contract_says(delivery: Delivery) -> None:
    r = delivery.receivers
    sent = {name: trigger(f"to-{name}") for name in ("ok", "flaky", "slow", "gone", "redirect")}
    await delivery.send(*sent.values())
    await until(
        lambda: all(sent[n]["trigger_id"] in r[n].delivered for n in ("ok", "flaky", "slow"))
    )
    await asyncio.sleep(1.5)  # anything more would arrive now
    assert len(r["ok"].calls[sent["ok"]["trigger_id"]]) == 1
    assert r["ok"].delivered[sent["ok"]["trigger_id"]] == sent["ok"]  # the trigger, as published
    assert len(r["flaky"].calls[sent["flaky"]["trigger_id"]]) == 4  # 500 x3, then 204: one delivery
    assert len(r["slow"].calls[sent["slow"]["trigger_id"]]) == 2  # timed out once
    assert len(r["gone"].calls[sent["gone"]["trigger_id"]]) == 1  # 410: dead, never retried
    assert len(r["redirect"].calls[sent["redirect"]["trigger_id"]]) == 1
    assert r["redirect"].followed == 0  # a redirect is never followed

    attempts = defaultdict(list)
    for d in await delivery.records("deliveries"):
        attempts[d["destination"]].append((d["attempt"], d["status"], d["http_status"]))
    assert attempts["ok"] == [(1, "delivered", 204)]
    assert attempts["flaky"] == [(1, "retrying", 500), (2, "retrying", 500), (3, "retrying", 500),
                                 (4, "delivered", 204)]  # fmt: skip
    assert attempts["slow"] == [(1, "retrying", None), (2, "delivered", 204)]
    assert attempts["gone"] == [(1, "dead", 410)]
    assert attempts["redirect"] == [(1, "dead", 302)]
    dead = {d["source"]: d for d in await delivery.records("dead-letter")}
    assert dead["deliver:gone"]["payload"]["trigger_id"] == sent["gone"]["trigger_id"]
    assert "redirects are not followed" in dead["deliver:redirect"]["error"]

    # and the sink makes each attempt a row of the deliveries table (CONTRACT §6)
    settings = delivery.settings
    warehouse = Warehouse(
        Path(settings.clickhouse_url.removeprefix("chdb://")), f"d_{uuid.uuid4().hex[:8]}"
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    sink = build_sink(settings, warehouse.clickhouse, CollectorRegistry(), lambda: producer,
                      settings.clock())  # fmt: skip
    writing = asyncio.ensure_future(sink.run())
    try:
        expected = sorted((d, a, s, h or 0) for d, tries in attempts.items() for a, s, h in tries)

        def stored() -> list[tuple[Any, ...]]:
            return sorted(
                warehouse.rows(
                    "SELECT destination, attempt, status, ifNull(http_status, 0) "
                    "FROM {db}.deliveries"
                )
            )

        async with asyncio.timeout(60):
            while [tuple(r) for r in stored()] != expected:
                await asyncio.sleep(0.5)
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await producer.stop()
        warehouse.close()


async def test_after_retry_for_a_failing_delivery_is_dead_and_dead_lettered(
    delivery: Delivery,
) -> None:
    """CONTRACT §5: retried until ``retry_for`` (2 s here), then dead: the last ma.deliveries
    record says so and the trigger goes to ma.dead-letter. Each record carries the trigger's id,
    its time, the error and (while retrying) when the next attempt is."""
    sent = trigger("to-broken")
    await delivery.send(sent)

    async def dead() -> list[Any]:
        records = [d for d in await delivery.records("deliveries")
                   if d["trigger_id"] == sent["trigger_id"]]  # fmt: skip
        return records if records and records[-1]["status"] == "dead" else []

    async with asyncio.timeout(60):
        while not (records := await dead()):
            await asyncio.sleep(0.5)
    assert [r["status"] for r in records] == ["retrying"] * (len(records) - 1) + ["dead"]
    assert len(records) >= 2 and [r["attempt"] for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert record["destination"] == "broken" and record["http_status"] == 500
        assert record["at"] and "500" in record["error"]
    assert all(r["next_attempt_at"] for r in records[:-1]) and not records[-1]["next_attempt_at"]
    assert "retry_for" in records[-1]["error"]
    letters = [d for d in await delivery.records("dead-letter") if d["source"] == "deliver:broken"]
    assert [d["payload"]["trigger_id"] for d in letters] == [sent["trigger_id"]]
    assert len(delivery.receivers["broken"].calls[sent["trigger_id"]]) == len(records)


async def test_a_receiver_down_for_30_s_does_not_delay_another(delivery: Delivery) -> None:
    r = delivery.receivers
    late = [trigger("to-down") for _ in range(3)]
    await delivery.send(*late)
    started = time.monotonic()
    on_time = []
    while time.monotonic() - started < 30:  # "down" is not listening all this while
        t = trigger("to-ok")
        sent_at = time.monotonic()
        await delivery.send(t)
        await until(lambda t=t: t["trigger_id"] in r["ok"].delivered, timeout=20)
        on_time.append(time.monotonic() - sent_at)
        await asyncio.sleep(2)
    assert max(on_time) < 5, on_time
    await r["down"].start()  # back: every trigger it missed arrives, with its id
    await until(lambda: all(t["trigger_id"] in r["down"].delivered for t in late), timeout=30)


async def test_pending_retries_survive_kill_9(delivery: Delivery) -> None:
    r = delivery.receivers
    r["stubborn"].failing_until = time.monotonic() + 3600  # 503 until told otherwise
    pending = [trigger("to-stubborn") for _ in range(4)]
    await delivery.send(*pending)
    await until(lambda: all(len(r["stubborn"].calls[t["trigger_id"]]) >= 2 for t in pending))
    assert delivery.process is not None
    delivery.process.kill()  # kill -9 with every one of them waiting to retry
    r["stubborn"].failing_until = 0.0
    await asyncio.to_thread(delivery.start)
    await until(lambda: all(t["trigger_id"] in r["stubborn"].delivered for t in pending))
    for t in pending:
        assert r["stubborn"].delivered[t["trigger_id"]] == t  # same webhook-id, same body
    attempts = defaultdict(list)
    for d in await delivery.records("deliveries"):
        if d["destination"] == "stubborn":
            attempts[d["trigger_id"]].append(d["attempt"])
    for t in pending:  # the restarted deliverer went on counting
        numbers = attempts[t["trigger_id"]]
        assert numbers == sorted(numbers) and numbers[-1] > 2, numbers


def readme_receiver() -> str:
    """The README's webhook receiver, verbatim (the code block after its marker)."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- webhook-receiver -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readmes_webhook_receiver_verifies_and_receives(
    topics: Settings, tmp_path: Path
) -> None:
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver())
    receiver = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        [sys.executable, str(script)],
        env={**os.environ, "CRM_WEBHOOK_SECRET": SECRET, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "triggers:\n  rules:\n    - {id: to-crm, when: {event: {type: page_view}}, channel: web}\n"
        "destinations:\n"
        f"  - {{id: crm, url: 'http://127.0.0.1:{port}/ma', rules: [to-crm],"
        " secret_env: HOOK_SECRET, backoff: {first: 0.5s, max: 1s}}\n"
    )
    settings = topics.model_copy(update={"config": rules, "deliver_web_port": free_port()})
    delivery = Delivery(settings, {}, tmp_path)
    await asyncio.to_thread(delivery.start)
    try:
        sent = trigger("to-crm")
        await delivery.send(sent)
        assert receiver.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(receiver.stdout.readline), 60)
        while not line.startswith("send"):  # aiohttp's banner first
            line = await asyncio.wait_for(asyncio.to_thread(receiver.stdout.readline), 60)
        assert line.strip() == f"send to-crm to {sent['anonymous_id']}"
        async with aiohttp.ClientSession() as http:  # a forged call is refused
            forged = {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
            async with http.post(f"http://127.0.0.1:{port}/ma", data=b"{}", headers=forged) as r:
                assert r.status == 401
    finally:
        receiver.terminate()
        receiver.wait(10)
        if delivery.process is not None:
            delivery.process.stop()
