"""The spool of records waiting for the broker (pipeline.collect.spool)."""

from __future__ import annotations

import tracemalloc

import pytest

from pipeline import codec
from pipeline.collect.spool import Spool
from pipeline.kafka import Record


def records(*names: str) -> list[Record]:
    return [("t.events", None, name.encode()) for name in names]


def test_records_come_back_oldest_first() -> None:
    spool = Spool()
    spool.add(records("a", "b"))
    spool.add(records("c"))
    assert spool.take(2) == records("a", "b")
    assert len(spool) == 1


def test_records_put_back_stay_first_in_line_and_in_order() -> None:
    spool = Spool()
    spool.add(records("a", "b", "c"))
    batch = spool.take(2)
    spool.add(records("d"))
    spool.put_back(batch)
    assert spool.take(10) == records("a", "b", "c", "d")


def test_a_full_spool_drops_the_oldest_and_counts_them() -> None:
    spool = Spool(max_records=3)
    assert spool.add(records("a", "b")) == 0
    assert spool.add(records("c", "d", "e")) == 2
    assert spool.take(10) == records("c", "d", "e")
    assert spool.dropped == 2


def test_taking_from_an_empty_spool_gives_nothing() -> None:
    assert Spool().take(5) == []
    with pytest.raises(ValueError, match="at least 1"):
        Spool(max_records=0)


def test_queued_records_take_their_own_size_not_their_encoders_buffer() -> None:
    event = {"event_id": "e" * 36, "type": "email_click", "url": "https://acme.io/" + "p" * 400}
    spool = Spool(max_records=10_000)

    tracemalloc.start()
    try:
        values = [codec.dumps({**event, "n": n}) for n in range(1000)]  # about 500 bytes each
        size = sum(len(v) for v in values)
        spool.add(("t.events", b"k", value) for value in values)
        del values  # what the spool holds is left
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert kept < 1.5 * size  # orjson's own buffers would be about 8 times as big
    assert [r[2] for r in spool.take(2)] == [codec.dumps({**event, "n": n}) for n in (0, 1)]
