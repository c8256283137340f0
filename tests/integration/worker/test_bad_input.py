"""Records the collector would never write, put straight on the worker's input topics: each
gets a dead-letter record naming the stage and the error, and the worker goes on."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import codec
from tests.integration.worker.conftest import Stack, eventually, new_aid, page_view

pytestmark = pytest.mark.integration


async def put_raw(stack: Stack, topic: str, *records: tuple[bytes, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(stack.settings.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def test_poison_records_are_dead_lettered_and_the_worker_goes_on(stack: Stack) -> None:
    aid = new_aid()
    bad_events = [
        b'{"type": "page_view", "anonymous_id": ',  # cut off
        codec.dumps(["not", "an", "event"]),
        codec.dumps({"type": "page_view", "anonymous_id": aid}),  # no event_id, no time
    ]
    await put_raw(stack, "events", *((aid.encode(), value) for value in bad_events))
    await put_raw(stack, "contact-updates", (b"c-1", b"\xff\xfe not json"))

    def ours(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v["source"] in ("worker:stitch", "worker:contact")]

    async with stack.reader("dead-letter") as reader:  # this module's stack: ours alone
        await reader.wait_for(lambda vs: len(ours(vs)) >= 4, timeout=30)
        await reader.settle(1.0)
    errors = {str(v["payload"]): (v["source"], v["error"]) for v in ours(reader.values)}
    assert errors == {
        '{"type": "page_view", "anonymous_id": ': (
            "worker:stitch",
            "JSONDecodeError: unexpected end of data: line 1 column 39 (char 38)",
        ),
        "['not', 'an', 'event']": (
            "worker:stitch",
            "ValueError: ma.events value: expected a JSON object, got a list",
        ),
        str({"type": "page_view", "anonymous_id": aid}): (
            "worker:stitch",
            "ValueError: ma.events value: missing event_id, received_at; every event needs "
            "event_id, type, received_at (the collector sets them)",
        ),
        "\ufffd\ufffd not json": (
            "worker:contact",
            "JSONDecodeError: str is not valid UTF-8: surrogates not allowed: line 1 column 1 "
            "(char 0)",
        ),
    }
    assert all(v["received_at"] for v in ours(reader.values))

    # the same cookie's next, good event is processed as usual
    after = page_view(aid, "/after-poison")
    await stack.send(after)
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.events WHERE event_id = {e:String}", e=after["event_id"]
        )
    )
