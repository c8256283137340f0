"""Stage 1, per cookie: identity stitching, anonymous scores and triggers, the hand-over.

Reads ``ma.events`` and ``ma.x.cookie-commands`` (keyed by ``anonymous_id``); keeps each cookie's
``CookieRecord`` in the ``cookies`` table; decides with ``steps.cookie_step`` (link, re-link or
refuse; anonymous score and triggers) and hands each event of a known contact to stage 2 on
``ma.x.contact-work``, stamped with its source partition and offset, a batch's hand-overs in one
record per partition (``pipeline.worker.handover``). After each batch it tells
every stage-2 partition how far in event time each of its ``ma.events`` partitions has got (a
watermark, ``pipeline.worker.order``), and whether it has read a partition to its end (idle).

Time-driven work (``fire_due``, from the worker's timer): watermarks that changed without a
batch (a partition read to its end, a rebalance) and the anonymous delayed triggers that are
due, up to each partition's watermark (an idle one's: now − ``MA_ORDER_WAIT``).
"""

from __future__ import annotations

from typing import Any

from pipeline import codec
from pipeline.clock import to_millis
from pipeline.identity import is_user_key
from pipeline.topics import CONTACT_WORK, COOKIE_COMMANDS
from pipeline.worker.commit import Ack, Stage, State
from pipeline.worker.handover import HandOver
from pipeline.worker.order import NEVER
from pipeline.worker.steps import (
    CookieRecord,
    Counters,
    Out,
    already_applied,
    check_event,
    cookie_command,
    cookie_step,
    due_step,
    event_time,
    stamp,
    state_key,
    user_step,
)

STAGE = "stitch"


class StitchStage(Stage):
    """Stage 1 over the ``cookies`` table and its ``cookie-due`` table."""

    def _own(self) -> None:
        self.cookies, self.cookie_due = self.table, self.due_table
        settings = self.settings
        self.events_topic = settings.topic("events")
        self.commands_topic = settings.topic(COOKIE_COMMANDS)
        self.order_wait_ms = int(settings.order_wait * 1000)
        # per ma.events partition: (latest received_at, offset) handled; what was last claimed
        self._seen: dict[int, tuple[int, int]] = {}
        self._claimed: dict[str, int] = {}
        self._idle: set[int] = set()  # partitions last claimed idle
        self._claimed_generation = -1  # the group generation claims were last sent in

    async def batch(self, batch: list[Any], ack: Ack | None = None) -> None:
        """Decide a batch of events and cookie commands, then hand it over to be committed
        (``ack`` once it is durable)."""
        out = self.out
        rules = self.rules.rules
        counters = Counters()
        pending: list[Any] = []
        # Partitions last claimed idle get new events: say so first, before the hand-overs
        # (stage 2 counts an idle partition as caught up until it hears otherwise).
        woken = {e.message.partition for e in batch if e.message.topic == self.events_topic}
        if woken & self._idle:
            out.emit(self.watermarks(busy=woken), pending)
        records: dict[str, CookieRecord] = {}
        scrub: list[tuple[Any, str]] = []
        hand = HandOver(self.settings.topic_partitions)
        self.fresh()

        def emit(outs: list[Out]) -> None:  # hand-overs wait for the batch's envelopes
            out.emit(hand.take(outs), pending)

        def cookie(key: str) -> CookieRecord:
            record = records.get(key)
            if record is None:
                record = records[key] = self.record(key)
            return record

        for event in batch:
            message = event.message
            try:
                key = message.key.decode() if message.key else None
                value = codec.loads(message.value)
                if message.topic == self.commands_topic:
                    if key is None:
                        raise ValueError("cookie command without a key")
                    record = cookie(key)
                    if already_applied(
                        record.offsets, message.topic, message.partition, message.offset
                    ):
                        counters.add("replayed")
                        continue
                    if value.get("k") == "due":
                        outs = due_step(record, rules, int(value["at"]), counters, anonymous_id=key)
                        emit(outs)
                    else:
                        # a source of its own for stage 2's replay check (ma.events has >= 0)
                        source = -1 - message.partition
                        outs = cookie_command(record, value, key, rules, counters)
                        if value.get("k") == "forget":  # an erased person's cookie
                            scrub.append((self.cookies, key))
                        emit(stamp(outs, source, message.offset))
                    continue
                aid = state_key(check_event(value))
                here = (message.partition, message.offset)
                self._seen[message.partition] = (
                    max(self._seen.get(message.partition, (NEVER, -1))[0], event_time(value)),
                    message.offset,
                )
                if aid is None:  # no cookie: nothing to remember per key
                    emit(stamp(cookie_step(CookieRecord(), value, rules, counters), *here))
                    continue
                record = cookie(aid)
                if already_applied(
                    record.offsets, message.topic, message.partition, message.offset
                ):
                    counters.add("replayed")
                    continue
                if is_user_key(aid):
                    outs = user_step(record, value, aid, counters)
                else:
                    outs = cookie_step(record, value, rules, counters)
                emit(stamp(outs, *here))
            except Exception as exc:
                out.dead_letter("worker:stitch", exc, message.value, pending)
        out.emit_encoded(CONTACT_WORK, hand.envelopes(), pending)
        out.emit(self.watermarks(), pending)  # after the hand-overs they cover
        states = [self._state(key, record) for key, record in records.items()]
        await out.commit(STAGE, pending, states, ack, scrub=scrub)
        out.metrics.processed.labels("stitch").inc(len(batch))
        out.count(counters)

    def decode(self, key: str, data: Any) -> CookieRecord:
        return CookieRecord.from_dict(data)

    def _state(self, key: str, record: CookieRecord) -> State:
        return (self.cookies, self.cookie_due, key, record, record.triggers.next_due())

    # -- watermarks -----------------------------------------------------------------------------
    def watermarks(self, busy: set[int] | frozenset[int] = frozenset()) -> list[Out]:
        """One watermark record per ``x.contact-work`` partition (``order``): partitions in
        ``busy`` are about to get new events, whatever was read before."""
        claims: dict[str, int] = {}
        idle: set[int] = set()
        for tp in self.app.consumer.assignment():
            if tp.topic != self.events_topic:
                continue
            seen = self._seen.get(tp.partition)
            claims[f"e{tp.partition}"] = seen[0] if seen is not None else NEVER
            if tp.partition not in busy and self.out.caught_up(tp, seen):
                idle.add(tp.partition)
        if not claims:
            return []
        self._claimed = claims
        self._idle = idle
        value = {"k": "wm", "w": claims, "idle": sorted(f"e{p}" for p in idle)}
        return [
            Out(CONTACT_WORK, None, value, partition=q)
            for q in range(self.settings.topic_partitions)
        ]

    def _changed_claims(self) -> bool:
        """Has a partition this stage owns become idle (or new) since its last watermarks?"""
        for tp in self.app.consumer.assignment():
            if tp.topic != self.events_topic:
                continue
            if f"e{tp.partition}" not in self._claimed:
                return True
            if tp.partition not in self._idle and self.out.caught_up(
                tp, self._seen.get(tp.partition)
            ):
                return True
        return False

    # -- time -----------------------------------------------------------------------------------
    async def fire_due(self) -> None:
        """Watermarks that changed without a batch, and the anonymous delayed triggers due up
        to each partition's watermark; committed as a batch is."""
        rules = self.rules.rules
        out = self.out
        async with self.lock:
            pending: list[Any] = []
            counters = Counters()
            generation = self.app.consumer_generation_id
            if generation != self._claimed_generation or self._changed_claims():
                self._claimed_generation = generation  # a rebalance: tell the new owners
                out.emit(self.watermarks(), pending)
            # how far each of its partitions has got: an idle one up to now - MA_ORDER_WAIT
            floor = to_millis(self.clock.now()) - self.order_wait_ms
            claims = {
                f"e{p}": max(w, floor) if p in self._idle else w
                for p, w in ((int(name[1:]), w) for name, w in self._claimed.items())
            }
            states = []
            self.fresh()
            for raw_key in self.due.pop_due(lambda p: claims.get(f"e{p}", NEVER)):
                key = raw_key.decode()
                cookie = self.record(key)
                upto = claims.get(f"e{self.cookies.data.partition_of(raw_key)}", NEVER)
                while (due := cookie.triggers.next_due()) is not None and due <= upto:
                    out.emit(due_step(cookie, rules, due, counters, anonymous_id=key), pending)
                states.append(self._state(key, cookie))
            await out.commit(STAGE, pending, states)
            out.count(counters)
