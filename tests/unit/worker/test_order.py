"""Event-time order inside stage 2 (``pipeline.worker.order``, ``contact_receive`` /
``contact_release``) and the wake index (``pipeline.worker.due``), without a broker."""

from __future__ import annotations

import random
from typing import Any

from pipeline.contacts import ContactState
from pipeline.kafka import partition_for
from pipeline.worker.due import DueIndex
from pipeline.worker.order import NEVER, SILENT_AFTER, Frontier, hold
from pipeline.worker.steps import ContactRecord, Counters, contact_receive, contact_release
from tests.unit.factories import ANA, HOUR, MINUTE, T0, contact, example_rules, page_view
from tests.unit.worker.harness import roundtrip

RULES = example_rules()
A = contact(ANA)


def test_the_frontier_is_the_lowest_watermark_and_an_idle_source_follows_the_clock() -> None:
    frontier = Frontier(partitions=2, wait_ms=500)
    frontier.assigned({0}, wall=0.0)
    frontier.heard(0, "e0", T0 + 100, idle=False, wall=0.0)
    frontier.heard(0, "e1", T0 + 50, idle=False, wall=0.0)
    assert frontier.value(0, T0 + 10_000, wall=1.0) == NEVER  # "u" not heard yet
    frontier.heard(0, "u", NEVER, idle=True, wall=0.0)
    assert frontier.value(0, T0 + 10_000, wall=1.0) == T0 + 50
    frontier.heard(0, "e1", T0 + 60, idle=True, wall=1.0)  # read to the end
    assert frontier.value(0, T0 + 10_000, wall=1.0) == T0 + 100  # e1 counts as now - 500
    assert frontier.value(0, T0 + 400, wall=1.0) == T0 - 100  # ... by stage 2's own clock


def test_a_source_never_heard_from_stops_holding_others_back_after_a_while() -> None:
    frontier = Frontier(partitions=1, wait_ms=500)
    frontier.assigned({0}, wall=0.0)
    frontier.heard(0, "u", T0, idle=False, wall=0.0)
    assert frontier.value(0, T0 + 10_000, wall=1.0) == NEVER
    assert frontier.value(0, T0 + 10_000, wall=0.5 + SILENT_AFTER + 0.1) == T0


def _event(at: int, n: int, aid: str) -> dict[str, Any]:
    e = page_view("/pricing" if n % 3 else "/careers", at, anonymous_id=aid)
    return {"k": "event", "e": roundtrip({**e, "contact_id": A})}


def test_a_contacts_records_give_the_same_result_in_any_arrival_order() -> None:
    messages = [_event(T0 + n * MINUTE, n, f"c{n % 3}") for n in range(12)]
    results = set()
    for seed in range(20):
        shuffled = messages[:]
        random.Random(seed).shuffle(shuffled)
        record = ContactRecord(ContactState(contact_id=A))
        for offset, message in enumerate(shuffled):
            assert contact_receive(record, message, 0, offset)
        outs = contact_release(record, T0 + HOUR, RULES, Counters())
        assert record.inbox == []
        results.add(
            (
                round(record.profile.score, 6),
                tuple(
                    (o.topic, o.value["event_id"])
                    for o in outs
                    if o.value and "event_id" in o.value
                ),
            )
        )
    assert len(results) == 1


def test_release_stops_at_the_frontier_and_keeps_the_rest_held() -> None:
    record = ContactRecord(ContactState(contact_id=A))
    for n, offset in ((2, 0), (0, 1), (1, 2)):
        contact_receive(record, _event(T0 + n * MINUTE, n, "c"), 0, offset)
    contact_release(record, T0 + MINUTE, RULES, Counters())
    assert [entry[0] for entry in record.inbox] == [T0 + 2 * MINUTE]
    assert record.applied == T0 + MINUTE


class _Store:
    """The two methods of a table's store the index uses, over a dict (4 partitions)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def partition_of(self, key: bytes) -> int:
        return partition_for(key, [0, 1, 2, 3])

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def items_in(self, partition: int) -> Any:
        return [(k, v) for k, v in self.data.items() if self.partition_of(k) == partition]


class _Table:
    def __init__(self) -> None:
        self.data = _Store()


def test_the_wake_index_loads_assigned_partitions_and_names_each_due_key_once() -> None:
    table = _Table()
    keys = [f"k{n}".encode() for n in range(8)]
    for n, key in enumerate(keys):
        table.data.put(key, str(T0 + n).encode())  # left by an earlier owner
    index = DueIndex(table)
    index.sync({0, 1, 2, 3})
    assert sorted(index.pop_due(lambda p: T0 + 3)) == sorted(keys[:4])
    assert index.pop_due(lambda p: T0 + 3) == []  # once
    assert index.set(keys[0], T0 + 100) == [(table, keys[0], str(T0 + 100).encode())]
    assert index.set(keys[0], T0 + 100) == []  # unchanged: no changelog record
    due = index.pop_due(lambda p: T0 + 100)
    assert sorted(due) == sorted([*keys[4:], keys[0]]) and due.count(keys[0]) == 1
    index.sync(set())  # revoked: nothing of those partitions is due here any more
    assert index.pop_due(lambda p: T0 + 10**9) == []


def test_an_inbox_stays_in_order_whichever_order_records_arrive_in() -> None:
    """``hold`` appends a record that sorts last (most do) and inserts the others in place;
    records with equal keys keep their arrival order."""
    rng = random.Random(7)
    keys = [[rng.randrange(20), f"e{rng.randrange(5)}", 0, 0, 0, n, 0] for n in range(300)]
    for arrival in (keys, sorted(keys), rng.sample(keys, len(keys))):
        inbox: list[list[Any]] = []
        for n, key in enumerate(arrival):
            assert hold(inbox, key, {"n": n})
        assert [entry[:-1] for entry in inbox] == sorted(arrival)
    ties: list[list[Any]] = []
    for n in range(3):
        hold(ties, [1, "e", 0, 0, 0, 0, 0], {"n": n})
    hold(ties, [0, "e", 0, 0, 0, 0, 0], {"n": 3})
    assert [entry[-1]["n"] for entry in ties] == [3, 0, 1, 2]
