"""``pipeline.worker.handover``: a batch's hand-overs go to stage 2 as one record per partition,
in the order decided, and stage 2 takes each as it took a record of its own."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import codec
from pipeline.kafka import partition_for
from pipeline.models.internal import ContactWork
from pipeline.topics import CONTACT_WORK
from pipeline.worker import handover
from pipeline.worker.contact import ContactStage
from pipeline.worker.handover import HandOver
from pipeline.worker.steps import Counters, Out

PARTITIONS = 4


def linked(n: int) -> dict[str, Any]:
    return {"k": "linked", "aid": f"a-{n}", "at": 1_700_000_000_000 + n, "src": [0, n, 0]}


def work(n: int, contact: str) -> Out:
    return Out(CONTACT_WORK, contact, linked(n))


def test_hand_overs_go_out_one_record_per_partition_in_the_order_decided() -> None:
    hand = HandOver(PARTITIONS)
    contacts = [f"c-{i}" for i in range(12)]
    score = Out("scores", "c-0", {"score": 1})
    watermark = Out(CONTACT_WORK, None, {"k": "wm", "w": {}, "idle": []}, partition=2)
    outs = [work(n, contacts[n % len(contacts)]) for n in range(60)]
    rest = hand.take([outs[0], score, watermark, *outs[1:]])
    assert rest == [score, watermark]  # not hand-overs: emitted as they are

    envelopes = hand.envelopes()
    assert len(envelopes) == len({q for q, _ in envelopes})  # one per partition
    taken: list[tuple[str, dict[str, Any]]] = []
    for q, raw in envelopes:
        value = codec.loads(raw)
        ContactWork.model_validate(value)
        assert value["k"] == "batch"
        for key, item in value["m"]:
            assert partition_for(key.encode(), list(range(PARTITIONS))) == q  # as Kafka's
            taken.append((key, item))
    for q in {q for q, _ in envelopes}:  # each partition's in the order decided
        mine = [(o.key, o.value) for o in outs if partition_for(o.key.encode(), [0, 1, 2, 3]) == q]
        assert [pair for pair in taken if pair in mine] == mine
    assert sorted(taken, key=lambda p: p[1]["at"]) == [(o.key, o.value) for o in outs]
    assert hand.envelopes() == []  # taken once


def test_an_envelope_is_split_before_it_grows_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "ENVELOPE_BYTES", 400)
    hand = HandOver(1)
    outs = [work(n, "c-1") for n in range(20)]
    hand.take(outs)
    envelopes = hand.envelopes()
    assert len(envelopes) > 3
    items = []
    for q, raw in envelopes:
        assert q == 0 and len(raw) <= 400 + 100  # the limit, plus the envelope's own bytes
        items += codec.loads(raw)["m"]
    assert items == [["c-1", o.value] for o in outs]


def contact_stage() -> ContactStage:
    stage = ContactStage.__new__(ContactStage)  # no Faust app: only what taking in uses
    stage.app = SimpleNamespace(consumer_generation_id=1)
    stage.out = SimpleNamespace(load=lambda table, key: None)
    stage.table = "contacts"
    stage._records, stage._records_generation = OrderedDict(), -1
    stage.fresh()
    return stage


def test_stage_two_takes_every_hand_over_of_an_envelope_and_skips_it_replayed() -> None:
    stage = contact_stage()
    records: dict[str, Any] = {}
    counters = Counters()
    at = SimpleNamespace(topic="ma.x.contact-work", partition=1, offset=7)

    def take_envelope(message: Any) -> None:
        replayed: dict[str, bool] = {}
        for n, key in ((1, "c-1"), (2, "c-2"), (3, "c-1")):
            stage._take(records, key, linked(n), 0, message, counters, replayed)

    take_envelope(at)
    assert [e[-1]["aid"] for e in records["c-1"].inbox] == ["a-1", "a-3"]
    assert [e[-1]["aid"] for e in records["c-2"].inbox] == ["a-2"]
    assert "replayed" not in counters.values

    take_envelope(at)  # the same envelope again (a restart before the offset was committed)
    assert len(records["c-1"].inbox) == 2 and len(records["c-2"].inbox) == 1
    assert counters.values["replayed"] == 3
