"""What both stages share: producing a batch's outputs and making its state durable, in the order
that keeps a crash harmless, and where the worker's consumer got to on a partition.

A stage decides a batch with the pure functions of ``pipeline.worker.steps``, queues the records
it produces with ``emit(outs, pending)`` and ends with ``commit(stage, pending, states, ack)``.
The batch then becomes durable in the background while the stage decides its next batches:
each stage has one durable task (group commit), which takes every batch handed over since its
last round and makes them durable together, strictly in this order:

1. outputs first: every record of those batches, acknowledged by the broker;
2. then state: each touched key written once (its last value over those batches) to its table
   and its changelog record acknowledged, with the key's wake time in the stage's ``DueIndex``;
3. only then are the batches acknowledged to Faust (``ack``, in the order they were decided),
   which commits the input offsets; the next round starts its step 1 only after this step 3.

So a stage decides while the broker acknowledges, and the acknowledgements' round trips are
paid once per round, not once per batch: the slower the broker, the more batches a round takes.
At most ``MAX_QUEUED`` batches wait for a round; a stage handing over one more waits.

Until step 2 a batch's new state is held in memory (``load`` reads it from there), so that the
next batch decides on it, but nothing of it reaches the store before its outputs are durable.
A crash before (2) replays the batches from the old state and produces the same outputs again
(duplicates, never losses); a crash after (2) replays input the state has seen, which the stage
skips (``steps.already_applied``).

Outputs go straight to the app's aiokafka producer (partitioned by key, exactly as Faust
would), one ``BatchBuilder`` per partition (``pipeline.worker.produce``), not through Faust's
producer buffer: that buffer hands records on one ``await`` at a time and pauses every stream
while it holds more than 100, which made producing a third of the worker's time.

Example::

    committer = Committer(app, settings, metrics, clock)
    pending: list = []
    committer.emit([Out("scores", "c-1", {...})], pending)
    await committer.commit("contact", pending, [(contacts, contact_due, "c-1", state, wake)])
    await committer.flush("contact")      # until it is durable
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, cast

from faust.types import TP

from pipeline import codec
from pipeline.clock import Clock
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.topics import ANONYMOUS_EVENTS, CONTACT_WORK, COOKIE_COMMANDS, DECISIONS
from pipeline.worker.due import DueIndex
from pipeline.worker.faust_fixes import Consumer
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.produce import produce, wait
from pipeline.worker.steps import Counters, Out

log = logging.getLogger(__name__)

#: every topic a stage writes to (``Out.topic``: names without the prefix)
OUTPUT_TOPICS = (
    "identities",
    "scores",
    "triggers",
    "contacts",
    "contact-updates",
    "dead-letter",
    CONTACT_WORK,
    COOKIE_COMMANDS,
    ANONYMOUS_EVENTS,
    DECISIONS,
)

#: a key's new state: (table, due table, key, state or None to delete, wake time or None);
#: the state is the stage's record itself (a dataclass: orjson encodes its fields as they are,
#: without the ``to_dict`` copy, a third faster for a cookie) or plain data
State = tuple[Any, Any, str, Any, int | None]
#: acknowledges a batch to Faust once it is durable
Ack = Callable[[], Awaitable[None]]
#: a state encoded, waiting for its batch's outputs: (table, due table, key, entry, wake time),
#: ``entry`` a 1-tuple of the raw value (None: delete), its identity naming this write
_Held = tuple[Any, Any, bytes, tuple[bytes | None], int | None]
#: batches handed over and not yet taken by their stage's durable task, at most (then
#: ``commit`` waits): bounds the outputs and state held in memory while the broker is slow
MAX_QUEUED = 16


class _Handed(NamedTuple):
    """A decided batch waiting to be made durable."""

    pending: list[Any]
    held: list[_Held]
    ack: Ack | None
    scrub: list[tuple[Any, str]]


class Committer:
    def __init__(self, app: Any, settings: Settings, metrics: WorkerMetrics, clock: Clock) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock
        self.due: dict[Any, DueIndex] = {}  # due table → its index (each stage adds its own)
        self._topic_names = {name: settings.topic(name) for name in OUTPUT_TOPICS}
        self._produced = {name: metrics.produced.labels(name) for name in OUTPUT_TOPICS}
        self._sending: set[asyncio.Future[None]] = set()
        # state decided but not yet written (its batch's outputs are not durable yet)
        self._held: defaultdict[Any, dict[bytes, tuple[bytes | None]]] = defaultdict(dict)
        # per stage: the batches handed over for its durable task's next round, that task
        # (while it runs), and what made a round fail (raised to the stage)
        self._queued: defaultdict[str, list[_Handed]] = defaultdict(list)
        self._durable_task: dict[str, asyncio.Future[None]] = {}
        self._failed: dict[str, BaseException] = {}
        self._room: dict[str, asyncio.Event] = {}  # set when a round takes the queued batches

    # -- outputs ------------------------------------------------------------------------------
    def emit(self, outs: Iterable[Out], pending: list[Any] | None = None) -> None:
        """Queue records for ``drain(pending)``; without ``pending`` they are sent at once."""
        records = pending if pending is not None else []
        counts: dict[str, int] = {}
        topics = self._topic_names
        dumps = codec.dumps
        for out in outs:
            value = dumps(out.value) if out.value is not None else None
            key = out.key.encode() if out.key is not None else None
            if out.partition is None:
                records.append((topics[out.topic], key, value))
            else:
                records.append((topics[out.topic], key, value, out.partition))
            counts[out.topic] = counts.get(out.topic, 0) + 1
        for topic, n in counts.items():  # a metric's lock once per topic, not per record
            self._produced[topic].inc(n)
        if pending is None and records:
            task = asyncio.ensure_future(self.drain(records))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def emit_encoded(self, topic: str, values: list[tuple[int, bytes]], pending: list[Any]) -> None:
        """Queue values already encoded, each to its partition (``handover``'s envelopes)."""
        name = self._topic_names[topic]
        pending.extend((name, None, value, partition) for partition, value in values)
        if values:
            self._produced[topic].inc(len(values))

    async def send(self, records: list[Any]) -> None:
        """Produce ``(topic, key, value)`` records and wait for the broker's acknowledgement."""
        if not records:
            return
        sent = await produce(self.producer(), records)
        records.clear()
        await wait(sent)

    def producer(self) -> Any:
        """The app's aiokafka producer (once the app has started)."""
        return self.app.producer._ensure_producer()

    async def drain(self, pending: list[Any]) -> None:
        """Wait until every record produced so far — ``pending`` outputs and anything Faust
        itself queued — is acknowledged by the broker.

        Faust's own ``producer.flush()`` may return while its send buffer still holds records
        (it gives up after 0.1 s without progress), hence the explicit wait.
        """
        await self.send(pending)
        buffer = self.app.producer.buffer
        loop = asyncio.get_running_loop()
        started = loop.time()
        warned = False
        while buffer.size:
            await asyncio.sleep(0.001)
            if not warned and loop.time() - started > 10:
                warned = True
                log.warning("producer buffer still holds %d records after 10 s", buffer.size)
        await asyncio.sleep(0)  # a record the buffer just handed on reaches aiokafka
        await self.app.producer.flush()

    def dead_letter(
        self,
        source: str,
        exc: BaseException,
        payload: bytes | None,
        pending: list[Any] | None = None,
    ) -> None:
        log.error(
            "%s: %s", source, "".join(traceback.format_exception_only(exc)).strip(), exc_info=exc
        )
        try:
            decoded: Any = codec.loads(payload) if payload else None
        except ValueError:
            decoded = (payload or b"")[:65536].decode("utf-8", errors="replace")
        self.refused(source, f"{type(exc).__name__}: {exc}", decoded, pending)

    def refused(
        self, source: str, error: str, payload: Any = None, pending: list[Any] | None = None
    ) -> None:
        """The dead letter of something refused (``error`` as a person reads it), counted;
        without ``pending`` it is sent at once (a request the worker's API refused)."""
        value = {"received_at": self.clock.now(), "source": source, "error": error,
                 "payload": payload}  # fmt: skip
        self.emit([Out("dead-letter", None, value)], pending)
        self.metrics.dead_letters.labels(source).inc()

    def count(self, counters: Counters) -> None:
        for name, n in counters.values.items():
            self.metrics.decisions.labels(name).inc(n)

    # -- state --------------------------------------------------------------------------------
    def load(self, table: Any, key: str) -> Any:
        """The decoded state of ``key`` in ``table`` as last decided, or None. Table keys are
        bytes, exactly as the topic keys, so that the table's partitioner agrees with the
        topics'."""
        encoded = key.encode()
        held = self._held.get(table)
        entry = held.get(encoded) if held else None
        raw = entry[0] if entry is not None else table.data.get(encoded)
        return codec.loads(raw) if raw is not None else None

    async def commit(
        self,
        stage: str,
        pending: list[Any],
        states: list[State],
        ack: Ack | None = None,
        *,
        scrub: list[tuple[Any, str]] | None = None,
    ) -> None:
        """Hand a decided batch over to be made durable (the module's docstring): its outputs
        ``pending``, its new ``states``, and ``ack`` to call once both are durable. Returns at
        once, unless ``MAX_QUEUED`` batches of the stage already wait (then once there is room);
        raises what made one of the stage's rounds fail.

        ``scrub``: ``(table, key)`` of erased people (``forget``) whose earlier values must
        leave the disk: once this batch's state is written, their stores rewrite what held
        them (``RocksDBStore.scrub``)."""
        self._raise_failure(stage)
        if not pending and not states and ack is None and not scrub:
            return  # nothing to make durable (a timer's pass that found nothing due)
        held: list[_Held] = []
        for table, due_table, key, state, wake in states:
            encoded = key.encode()
            entry = (codec.dumps(state) if state is not None else None,)
            self._held[table][encoded] = entry
            held.append((table, due_table, encoded, entry, wake))
        while len(self._queued[stage]) >= MAX_QUEUED:
            await self._room.setdefault(stage, asyncio.Event()).wait()
            self._raise_failure(stage)
        self._queued[stage].append(_Handed(pending, held, ack, scrub or []))
        if stage not in self._durable_task:
            task = asyncio.ensure_future(self._durable(stage))
            task.add_done_callback(_log_failure)
            self._durable_task[stage] = task

    async def flush(self, stage: str) -> None:
        """Wait until the stage's batches handed over so far are durable (raising what made
        one fail)."""
        while (task := self._durable_task.get(stage)) is not None:
            await asyncio.wait([task])  # its failure is raised below, once
        self._raise_failure(stage)

    def _raise_failure(self, stage: str) -> None:
        """Raise, once, what made the stage's last round fail. Its batches stay unacknowledged
        (Faust commits no offset past them: a restart replays them); batches queued behind it
        go in the next round."""
        failure = self._failed.pop(stage, None)
        if failure is not None:
            raise failure

    async def _durable(self, stage: str) -> None:
        """The stage's durable task: rounds over the batches handed over, until none waits."""
        try:
            while self._queued[stage]:
                group = self._queued.pop(stage)
                self._make_room(stage)
                await self._round(group)
        except BaseException as exc:
            self._failed[stage] = exc
            raise
        finally:
            del self._durable_task[stage]
            self._make_room(stage)

    def _make_room(self, stage: str) -> None:
        room = self._room.pop(stage, None)
        if room is not None:
            room.set()

    async def _round(self, group: list[_Handed]) -> None:
        """Make ``group`` (batches in the order decided) durable together: steps 1 to 3."""
        if len(group) == 1:
            pending, held, scrub = group[0].pending, group[0].held, group[0].scrub
        else:
            pending = [record for handed in group for record in handed.pending]
            # each key once, its last decision: later batches decided on the earlier ones
            last = {(h[0], h[2]): h for handed in group for h in handed.held}
            held = list(last.values())
            scrub = [item for handed in group for item in handed.scrub]
        await self.drain(pending)
        await self.send_changelog(self._write(held))
        if scrub:
            by_table: defaultdict[Any, list[bytes]] = defaultdict(list)
            for table, key in scrub:
                by_table[table].append(key.encode())
            for table, keys in by_table.items():
                await asyncio.to_thread(table.data.scrub, keys)
            self.metrics.decisions.labels("state_scrubbed").inc(len(scrub))
        for handed in group:
            if handed.ack is not None:
                await handed.ack()

    def _write(self, held: list[_Held]) -> list[Any]:
        """Write a batch's new state to the tables, each key's wake time (when it next needs
        its stage: a held record or a delayed trigger; ``pipeline.worker.due``) to its index;
        return the changelog records to produce, ``(table, key, value)``.

        This is what ``table[key] = value`` does, minus Faust's per-key changelog path (a
        future, a trip through its producer buffer and a persisted-offset write per record):
        ``send_changelog`` produces them together.
        """
        changelog: list[Any] = []
        writes: defaultdict[Any, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for table, due_table, key, entry, wake in held:
            raw = entry[0]
            writes[table].append((key, raw))
            changelog.append((table, key, raw))
            changelog += self.due[due_table].set(key, wake)
        for table, items in writes.items():
            table.data.put_many(items)
        for table, _, key, entry, _ in held:
            waiting = self._held[table]
            if waiting.get(key) is entry:  # not decided again since
                del waiting[key]
        return changelog

    async def send_changelog(self, changelog: list[Any]) -> None:
        """Produce table changelog records ``(table, key, value)`` and wait for the broker;
        then record in each table's store the changelog offset it now holds (what Faust's
        recovery reads from on a restart: the store is current up to there)."""
        if not changelog:
            return
        tables = {table.changelog_topic.get_topic_name(): table for table, _, _ in changelog}
        topic_of = {table: topic for topic, table in tables.items()}
        sent = await produce(
            self.producer(), [(topic_of[table], key, value) for table, key, value in changelog]
        )
        for (topic, partition), offset in (await wait(sent)).items():
            tables[topic].data.set_persisted_offset(TP(topic, partition), offset)

    # -- where the consumer got to ---------------------------------------------------------
    def caught_up(self, tp: TP, seen: tuple[int, int] | None) -> bool:
        """Has this worker handled everything there is on ``tp`` (as of its last fetch)?
        ``seen``: the (time, offset) it last handled there, None if nothing since it got
        ``tp``."""
        highwater = self.app.consumer.highwater(tp)
        if highwater is None:
            return False
        if seen is not None:
            return bool(seen[1] + 1 >= highwater)
        # Nothing handled since the partition was assigned: Faust's read offset is then the
        # committed offset (nothing fetched: caught up if that is the end), or the offset of a
        # message fetched and queued, not handled yet (never the end).
        handed = cast(Consumer, self.app.consumer).handed(tp)
        return bool(highwater == 0 if handed is None else highwater <= handed)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a batch could not be made durable: %r", task.exception())


#: decoded records a stage keeps between its batches (``Stage.record``), most recently used
RECORDS_KEPT = 20_000


class Stage:
    """What each stage (``stitch.StitchStage``, ``contact.ContactStage``) is given: the Faust
    app, the settings, the rules in force, the clock, the committer, its table and its due
    table (with its ``DueIndex``), and a lock: a batch and the stage's time-driven work
    exclude each other.

    A stage reads its keys' state with ``record(key)``: the record as it last decided it,
    kept decoded between batches (the very object it mutates and commits), else decoded from
    the committer's state (``decode``). The kept records are dropped at each rebalance (a
    recovery may have changed the store) and an erased key's as it is deleted (``drop``)."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        rules: RulesWatcher,
        clock: Clock,
        committer: Committer,
        table: Any,
        due_table: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.rules = rules
        self.clock = clock
        self.out = committer
        self.table = table
        self.due_table = due_table
        self.due = committer.due[due_table] = DueIndex(due_table)
        self.lock = asyncio.Lock()
        self._records: OrderedDict[str, Any] = OrderedDict()
        self._records_generation = -1
        self._own()

    def _own(self) -> None:
        """A stage's own fields (after the shared ones)."""

    def decode(self, key: str, data: Any) -> Any:
        """The stage's record of ``key`` from its decoded state (None: a key never seen)."""
        raise NotImplementedError

    def fresh(self) -> None:
        """Forget the kept records if the group has rebalanced since they were kept: called
        before a batch or a time-driven pass reads any."""
        generation = self.app.consumer_generation_id
        if generation != self._records_generation:
            self._records.clear()
            self._records_generation = generation

    def record(self, key: str) -> Any:
        """The record of ``key`` as this stage last decided it (see the class docstring)."""
        records = self._records
        record = records.get(key)
        if record is None:
            record = records[key] = self.decode(key, self.out.load(self.table, key))
            if len(records) > RECORDS_KEPT:
                records.popitem(last=False)
        else:
            records.move_to_end(key)
        return record

    def drop(self, key: str) -> None:
        """Stop keeping ``key``'s record (its state is being deleted)."""
        self._records.pop(key, None)
