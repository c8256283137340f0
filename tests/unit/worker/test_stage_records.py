"""``Stage.record``: a stage keeps its keys' records decoded between batches, the very objects
it mutates and commits, and forgets them when the group rebalances or a key is erased."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pipeline.worker import commit
from pipeline.worker.commit import Stage


class Decoding(Stage):
    def decode(self, key: str, data: Any) -> dict[str, Any]:
        self.decoded += 1
        return dict(data or {"key": key})


def stage(store: dict[str, Any]) -> Decoding:
    s = Decoding.__new__(Decoding)  # no Faust app: only what ``record`` uses
    s.app = SimpleNamespace(consumer_generation_id=1)
    s.out = SimpleNamespace(load=lambda table, key: store.get(key))
    s.table = "table"
    s._records, s._records_generation = commit.OrderedDict(), -1
    s.decoded = 0
    return s


def test_a_record_is_decoded_once_then_kept_as_decided() -> None:
    s = stage({"a": {"n": 1}})
    s.fresh()
    record = s.record("a")
    record["n"] = 2  # the batch decides
    s.fresh()
    assert s.record("a") is record and record == {"n": 2} and s.decoded == 1


def test_a_rebalance_forgets_the_kept_records() -> None:
    store = {"a": {"n": 1}}
    s = stage(store)
    s.fresh()
    s.record("a")["n"] = 5
    store["a"] = {"n": 9}  # recovered from the changelog after the rebalance
    s.app.consumer_generation_id = 2
    s.fresh()
    assert s.record("a") == {"n": 9} and s.decoded == 2


def test_an_erased_key_is_decoded_afresh() -> None:
    s = stage({})
    s.fresh()
    s.record("a")["n"] = 1
    s.drop("a")
    assert s.record("a") == {"key": "a"}


def test_only_the_most_recently_used_are_kept(monkeypatch: Any) -> None:
    monkeypatch.setattr(commit, "RECORDS_KEPT", 2)
    s = stage({})
    s.fresh()
    a = s.record("a")
    s.record("b")
    s.record("a")  # a used last: b is the oldest
    s.record("c")
    assert s.record("a") is a and s.decoded == 3
    s.record("b")  # forgotten: decoded again
    assert s.decoded == 4
