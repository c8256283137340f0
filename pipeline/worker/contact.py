"""Stage 2, per contact: score, lifecycle, triggers and CRM updates, in event-time order.

Reads ``ma.x.contact-work`` (stage 1's hand-overs, one record per batch and partition:
``pipeline.worker.handover``; and its watermarks) and ``ma.contact-updates``; keeps each
contact's ``ContactRecord`` in the ``contacts`` table. A batch is taken in first
(``steps.contact_receive``: deduplicated, held in the contact's inbox), then each contact's
held records and due triggers are released in (received_at, event_id) order up to the
partition's frontier (``pipeline.worker.order``): the point every source — each of stage 1's
``ma.events`` partitions, and this partition's ``ma.contact-updates`` — has passed.

Time-driven work (``fire_due``, from the worker's timer): the contacts whose wake time (a held
record or a delayed trigger, kept in ``contact-due``) the frontier has reached.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from pipeline import codec
from pipeline.clock import to_millis
from pipeline.topics import CONTACT_WORK
from pipeline.worker.commit import Ack, Stage, State
from pipeline.worker.handover import hand_overs
from pipeline.worker.order import NEVER, Frontier, wake_time
from pipeline.worker.steps import (
    ContactRecord,
    Counters,
    already_applied,
    check_update,
    contact_receive,
    contact_release,
    message_time,
)

STAGE = "contact"


class ContactStage(Stage):
    """Stage 2 over the ``contacts`` table and its ``contact-due`` table."""

    def _own(self) -> None:
        self.contacts, self.contact_due = self.table, self.due_table
        settings = self.settings
        self.work_topic = settings.topic(CONTACT_WORK)
        self.updates_topic = settings.topic("contact-updates")
        self.frontier = Frontier(settings.topic_partitions, int(settings.order_wait * 1000))
        # per ma.contact-updates partition: (latest received_at, offset) handled
        self._seen: dict[int, tuple[int, int]] = {}

    async def batch(self, batch: list[Any], ack: Ack | None = None) -> None:
        """Take a batch in, then release what the frontier has passed; hand it over to be
        committed (``ack`` once it is durable)."""
        out = self.out
        rules = self.rules.rules
        counters = Counters()
        pending: list[Any] = []
        records: dict[str, ContactRecord] = {}
        wall = asyncio.get_running_loop().time()
        self.fresh()
        messages = len(batch)  # an envelope's hand-overs counted one by one
        for event in batch:
            message = event.message
            try:
                key = message.key.decode() if message.key else None
                value = codec.loads(message.value)
                source = 0
                if message.topic == self.updates_topic:
                    self._seen[message.partition] = (
                        max(
                            self._seen.get(message.partition, (NEVER, -1))[0],
                            message_time({**value, "k": "update"}) or NEVER,
                        ),
                        message.offset,
                    )
                    if value.get("via") == "worker":
                        continue  # a form's traits: applied from stage 1's hand-over
                    value = {"k": "update", **check_update(value)}
                    source = 1
                elif value.get("k") == "wm":
                    idle = set(value.get("idle") or ())
                    for name, w in value["w"].items():
                        self.frontier.heard(
                            message.partition, name, int(w), idle=name in idle, wall=wall
                        )
                    continue
                elif (pairs := hand_overs(value)) is not None:  # stage 1's, to this partition
                    replayed: dict[str, bool] = {}
                    messages += len(pairs) - 1
                    for key, item in pairs:
                        try:
                            self._take(records, key, item, 0, message, counters, replayed)
                        except Exception as exc:
                            out.dead_letter("worker:contact", exc, codec.dumps(item), pending)
                    continue
                self._take(records, key, value, source, message, counters)
            except Exception as exc:
                out.dead_letter("worker:contact", exc, message.value, pending)
        self._release(records, rules, counters, pending)
        erased = [(self.contacts, key) for key, record in records.items() if record.erased]
        await out.commit(STAGE, pending, self._states(records), ack, scrub=erased)
        out.metrics.processed.labels("contact").inc(messages)
        out.count(counters)

    def _take(
        self,
        records: dict[str, ContactRecord],
        key: str | None,
        value: dict[str, Any],
        source: int,
        message: Any,
        counters: Counters,
        replayed: dict[str, bool] | None = None,
    ) -> None:
        """Take one message of contact ``key`` in (``steps.contact_receive``), unless its
        record (``message``, where it came from) is already in the contact's state. Messages
        of one envelope share its offset: ``replayed`` keeps the answer per contact."""
        kind = value.get("k")
        if kind == "event" and value["e"].get("contact_id") is None:
            return  # anonymous, from before x.anonymous-events: for the sink
        if kind == "erase":
            return  # for the sink
        if key is None:
            raise ValueError("contact-work message without a key")
        record = records.get(key) or self.record(key)
        records[key] = record
        skip = replayed.get(key) if replayed is not None else None
        if skip is None:
            skip = already_applied(record.offsets, message.topic, message.partition, message.offset)
            if replayed is not None:
                replayed[key] = skip
        if skip:
            counters.add("replayed")
            return
        if kind == "due":
            return  # a tick of an older version: due times are kept per key now
        contact_receive(record, value, source, message.offset, counters)

    def _release(
        self,
        records: dict[str, ContactRecord],
        rules: Any,
        counters: Counters,
        pending: list[Any],
    ) -> None:
        """Release each contact's held records and due triggers the frontier has passed: the
        contacts in ``records``, and those whose wake time the frontier reached."""
        now = to_millis(self.clock.now())
        wall = asyncio.get_running_loop().time()
        owned = {
            tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.work_topic
        }
        self.frontier.assigned(owned, wall)
        limits = {}
        for q in owned:
            # this partition's own ma.contact-updates is one of its sources
            seen = self._seen.get(q)
            w = seen[0] if seen is not None else NEVER
            idle = self.out.caught_up(TP(self.updates_topic, q), seen)
            self.frontier.heard(q, "u", w, idle=idle, wall=wall)
            limits[q] = self.frontier.value(q, now, wall)
        for raw_key in self.due.pop_due(lambda q: limits.get(q, NEVER)):
            key = raw_key.decode()
            if key not in records:
                records[key] = self.record(key)
        for key, record in records.items():
            q = self.contacts.data.partition_of(key.encode())
            try:
                self.out.emit(
                    contact_release(record, limits.get(q, NEVER), rules, counters), pending
                )
            except Exception as exc:
                self.out.dead_letter("worker:contact", exc, codec.dumps(record.to_dict()), pending)
                record.inbox.clear()

    def decode(self, key: str, data: Any) -> ContactRecord:
        return ContactRecord.from_dict(key, data)

    def _states(self, records: dict[str, ContactRecord]) -> list[State]:
        for key, record in records.items():
            if record.erased:
                self.drop(key)
        return [
            (
                self.contacts,
                self.contact_due,
                key,
                None if record.erased else record,
                None if record.erased else wake_time(record.inbox, record.triggers.pending),
            )
            for key, record in records.items()
        ]

    # -- time -----------------------------------------------------------------------------------
    async def fire_due(self) -> None:
        """Release the contacts whose wake time the frontier has reached; committed as a batch
        is."""
        async with self.lock:
            pending: list[Any] = []
            counters = Counters()
            records: dict[str, ContactRecord] = {}
            self.fresh()
            self._release(records, self.rules.rules, counters, pending)
            await self.out.commit(STAGE, pending, self._states(records))
            self.out.count(counters)
