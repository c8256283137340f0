"""The committer's group commit (``pipeline.worker.commit``): a stage hands batches over and goes
on deciding; its durable task makes every batch handed over since its last round durable
together — outputs acknowledged, then each key's last state written once, then the batches
acknowledged in order — and a failure reaches the stage once, its batches unacknowledged.

The broker is replaced by a gate the test opens (``produce``/``wait`` patched): what is checked
is the order of the steps, which the integration tests (``test_recovery``, ``test_order``) rely
on against a real broker and crashes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.worker import commit
from pipeline.worker.commit import MAX_QUEUED, Committer
from pipeline.worker.metrics import WorkerMetrics


class Broker:
    """Acknowledges what is produced when the test opens the gate; logs every step."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def produce(self, producer: Any, records: list[Any]) -> list[Any]:
        self.log.append(("produce", [record[1] for record in records]))
        return [list(records)]

    async def wait(self, sent: list[Any]) -> dict[tuple[str, int], int]:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {}


class Store:
    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name, self.log = name, log
        self.values: dict[bytes, bytes | None] = {}

    def put_many(self, items: list[tuple[bytes, bytes | None]]) -> None:
        self.log.append(("put", self.name, sorted(items)))
        self.values.update(items)

    def get(self, key: bytes) -> bytes | None:
        return self.values.get(key)


class Table:
    """What the committer uses of a Faust table (hashable, as tables are)."""

    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.data = Store(name, log)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")


class NoDue:
    def set(self, key: bytes, wake: int | None) -> list[Any]:
        return []


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    b = Broker()
    monkeypatch.setattr(commit, "produce", b.produce)
    monkeypatch.setattr(commit, "wait", b.wait)
    return b


def committer(broker: Broker) -> tuple[Committer, Any]:
    async def flush() -> None:
        return None

    app = SimpleNamespace(producer=SimpleNamespace(
        _ensure_producer=lambda: None, buffer=SimpleNamespace(size=0), flush=flush))  # fmt: skip
    c = Committer(app, Settings(), WorkerMetrics(), Settings().clock())
    c.due["due"] = NoDue()  # type: ignore[assignment]
    return c, Table("cookies", broker.log)


def acker(broker: Broker, n: int) -> Any:
    async def ack() -> None:
        broker.log.append(("ack", n))

    return ack


async def test_batches_handed_over_during_a_round_are_made_durable_together_in_order(
    broker: Broker,
) -> None:
    c, cookies = committer(broker)
    broker.gate.clear()  # the broker is slow: the first round waits
    await c.commit("stitch", [("t", b"out-1", b"{}")], [(cookies, "due", "a", {"v": 1}, None)],
                   acker(broker, 1))  # fmt: skip
    await asyncio.sleep(0)  # the first round has started: its outputs are out
    # the stage goes on deciding: commit returns without waiting for the broker
    for n, value in ((2, 2), (3, 3)):
        await c.commit("stitch", [("t", f"out-{n}".encode(), b"{}")],
                       [(cookies, "due", "a", {"v": value}, None),
                        (cookies, "due", f"k{n}", {"v": n}, None)], acker(broker, n))  # fmt: skip
    assert c.load(cookies, "a") == {"v": 3}  # the next batch decides on the latest
    assert [step[0] for step in broker.log] == ["produce"]
    broker.gate.set()
    await c.flush("stitch")
    assert broker.log == [
        ("produce", [b"out-1"]),
        ("put", "cookies", [(b"a", b'{"v":1}')]),
        ("produce", [b"a"]),  # its changelog
        ("ack", 1),
        # batches 2 and 3 in one round: their outputs, then each key once (its last value),
        # then both acknowledged, in order
        ("produce", [b"out-2", b"out-3"]),
        ("put", "cookies", [(b"a", b'{"v":3}'), (b"k2", b'{"v":2}'), (b"k3", b'{"v":3}')]),
        ("produce", [b"a", b"k2", b"k3"]),
        ("ack", 2),
        ("ack", 3),
    ]
    assert c.load(cookies, "a") == {"v": 3}  # now read from the store's side, as written


async def test_nothing_to_make_durable_is_not_a_round(broker: Broker) -> None:
    c, _ = committer(broker)
    await c.commit("contact", [], [])  # a timer's pass that found nothing due
    await c.flush("contact")
    assert broker.log == []


async def test_a_failed_round_is_raised_once_and_its_batches_stay_unacknowledged(
    broker: Broker,
) -> None:
    c, cookies = committer(broker)
    broker.fail = RuntimeError("broker away")
    await c.commit("stitch", [("t", b"out-1", b"{}")], [(cookies, "due", "a", {"v": 1}, None)],
                   acker(broker, 1))  # fmt: skip
    with pytest.raises(RuntimeError, match="broker away"):
        await c.flush("stitch")
    assert ("ack", 1) not in broker.log and not any(step[0] == "put" for step in broker.log)
    broker.fail = None
    await c.commit("stitch", [("t", b"out-2", b"{}")], [], acker(broker, 2))  # raised once only
    await c.flush("stitch")
    assert broker.log[-1] == ("ack", 2)


async def test_a_stage_waits_when_too_many_batches_wait_for_a_round(broker: Broker) -> None:
    c, cookies = committer(broker)
    broker.gate.clear()
    await c.commit("stitch", [("t", b"first", b"{}")], [])
    await asyncio.sleep(0)  # its round waits for the broker
    for n in range(MAX_QUEUED):
        await c.commit("stitch", [("t", b"x", b"{}")], [(cookies, "due", f"k{n}", {}, None)])
    more = asyncio.ensure_future(c.commit("stitch", [("t", b"y", b"{}")], []))
    await asyncio.sleep(0.01)
    assert not more.done()  # full: the stage waits
    broker.gate.set()
    await asyncio.wait_for(more, 5)
    await c.flush("stitch")
    assert [len(step[1]) for step in broker.log if step[0] == "produce"][:2] == [1, MAX_QUEUED]
