"""``SinkLoop.write``: stage 1's envelopes of hand-overs (``pipeline.worker.handover``) become the
rows of each message in them, and one bad message is a dead letter of its own, not the loss of
the rest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline import codec
from pipeline.clock import FrozenClock
from pipeline.settings import Settings
from pipeline.sink.loop import SinkLoop
from pipeline.sink.metrics import SinkMetrics
from pipeline.worker.handover import HandOver
from pipeline.worker.steps import Out

AT = "2026-03-02T09:00:00.120Z"


class Recording:
    """Stands in for ``SinkWriter``: what it was asked to write."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, tuple[Any, ...]]] = []

    async def write(self, rows: list[tuple[str, tuple[Any, ...]]], batch_id: str) -> dict[str, int]:
        self.rows += rows
        return {}


def hand_over(event_id: str, contact: str) -> Out:
    event = {"event_id": event_id, "type": "page_view", "received_at": AT, "contact_id": contact,
             "anonymous_id": f"a-{event_id}"}  # fmt: skip
    return Out("x.contact-work", contact, {"k": "event", "e": event, "src": [0, 1, 0]})


async def test_each_hand_over_of_an_envelope_is_written_and_a_bad_one_dead_lettered(
    tmp_path: Any,
) -> None:
    settings = Settings(data_dir=tmp_path)
    writer = Recording()
    loop = SinkLoop(settings, writer, SinkMetrics(CollectorRegistry()), lambda: None,
                    FrozenClock(datetime(2026, 3, 2, tzinfo=UTC)))  # type: ignore[arg-type]  # fmt: skip
    hand = HandOver(1)
    bad = Out("x.contact-work", "c-2", {"k": "event", "e": {"event_id": "e-bad"}})  # no type
    hand.take([hand_over("e-1", "c-1"), bad, hand_over("e-2", "c-1")])
    [(_, envelope)] = hand.envelopes()
    sent: list[bytes] = []

    async def send(topic: str, value: bytes) -> Any:
        sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    loop.producer = lambda: SimpleNamespace(send=send)  # type: ignore[assignment,return-value]
    record = SimpleNamespace(topic=settings.topic("x.contact-work"), partition=0, offset=3,
                             value=envelope)  # fmt: skip
    assert await loop.write([record]) == []
    assert [row[0] for table, row in writer.rows if table == "events"] == ["e-1", "e-2"]
    [dead] = sent
    assert codec.loads(dead)["payload"]["e"]["event_id"] == "e-bad"
