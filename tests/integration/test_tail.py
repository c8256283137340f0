"""CONTRACT §7 ``tail TOPIC`` and ``triggers tail``: a topic's records decoded, from now on or
``--from-beginning``, on the real broker, through the real command in a child process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import codec
from pipeline.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def trigger(rule: str, **subject: str) -> dict[str, object]:
    return {
        "trigger_id": str(uuid.uuid4()),
        "rule": rule,
        "channel": "email",
        "fired_at": "2026-03-03T09:05:00.000Z",
        "due_at": "2026-03-03T09:05:00.000Z",
        "score": 12.0,
        "cause_event_ids": [],
        "attributes": {},
        **subject,
    }


async def produce(settings: Settings, topic: str, *values: dict[str, object]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topic(topic), codec.dumps(value), key=b"k")
    finally:
        await producer.stop()


def command(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **settings.as_env(), "MA_KAFKA_BOOTSTRAP": settings.bootstrap}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out.splitlines()


async def test_triggers_tail_prints_one_readable_line_per_trigger_of_the_rules_asked(
    topics: Settings,
) -> None:
    ana = trigger("pricing-trial-offer", contact_id="c-1", email="ana@acme.io")
    anonymous = trigger("pricing-trial-offer", anonymous_id="a-1")
    other = trigger("mql-sales-alert", contact_id="c-2", email="bo@acme.io")
    await produce(topics, "triggers", ana, other, anonymous)
    tail = command(
        topics, "triggers", "tail", "--from-beginning", "--rule", "pricing-trial-offer",
        "--limit", "2",
    )  # fmt: skip
    lines = await asyncio.to_thread(finished, tail)
    assert lines == [
        f"2026-03-03T09:05:00.000Z  pricing-trial-offer  email  ana@acme.io  {ana['trigger_id']}",
        f"2026-03-03T09:05:00.000Z  pricing-trial-offer  email  a-1  {anonymous['trigger_id']}",
    ]


async def test_tail_follows_a_topic_from_now_one_json_per_line(topics: Settings) -> None:
    await produce(topics, "scores", {"old": True})  # before: not shown
    tail = command(topics, "tail", "scores", "--limit", "2")
    assert tail.stderr is not None
    said = await asyncio.to_thread(tail.stderr.readline)  # once it is positioned
    assert said.strip() == f"following {topics.topic('scores')} from now (Ctrl-C stops)"
    await produce(topics, "scores", {"n": 1}, {"n": 2})
    lines = await asyncio.to_thread(finished, tail)
    assert [codec.loads(line) for line in lines] == [{"n": 1}, {"n": 2}]


async def test_tail_of_an_unknown_topic_is_one_line(topics: Settings) -> None:
    tail = command(topics, "tail", "nope")
    _, err = await asyncio.to_thread(tail.communicate, timeout=60)
    assert tail.returncode == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"Error: no topic nope on {topics.bootstrap}; the pipeline's: ")
    assert topics.topic("triggers") in line
