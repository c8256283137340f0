"""The two Faust defects the worker works around, each through a Faust extension point, and
four costs of Faust's per-message path cut the same way (a hand-off, a schema, the producer
buffer's size, a monitor).

Both are about messages a starting (or rebalancing) worker fetched before Faust is ready for
them: Faust drops them and counts on "seek to the committed offset" to fetch them again. Each
has a test in ``tests/integration/worker/test_faust_fixes.py`` that fails once the defect is
gone, so that the work-around can go too.

## 1. A partition never committed is not fetched again: the restart that read nothing

**The defect** (faust-streaming 0.15.3 with aiokafka 0.14; same family as faust-streaming
#216). Messages fetched while Faust's flow is stopped are dropped on purpose: ``getmany``
finds the flow inactive and calls ``perform_seek`` ("seek back to committed offsets"), and the
fetcher's hand-off is cut short by ``suspend_flow`` during a rebalance. Both rely on
``perform_seek`` rewinding every partition to its committed offset. It does not rewind a
partition that has *no* committed offset (or offset 0): aiokafka's ``seek_to_committed`` seeks
only ``if offset and offset > 0``. The dropped messages of such a partition are never fetched
again, Faust commits a partition only up to its first unacknowledged offset, so the partition
never commits, and every restart repeats it. Seen on our worker after ``kill -9`` under CPU
load: "worker ready", every partition active, ``events:0`` read nothing, lag stuck at 19.

**The work-around**: a Faust transport (``ma-kafka://``, registered in Faust's transport
registry by our ``faust.transports`` entry point) whose consumer's ``perform_seek`` also seeks
those partitions to the start of the log, which is what ``auto_offset_reset=earliest`` means.

## 2. Recovery clears messages of the current assignment (faust-streaming #596, open)

A worker that starts or rebalances restores its tables first, with the stream partitions paused.
When the tables are restored, ``Recovery.on_recovery_completed`` (1) resumes the stream
partitions, (2) seeks each to its committed offset (one broker round trip per partition, while
the fetcher keeps delivering), then (3) calls ``app.flow_control.resume()``, which *empties
every agent queue* (``FlowControlQueue(clear_on_resume=True)``, meant for messages of revoked
partitions). Messages delivered in (2) and still queued at (3) are dropped, and are not fetched
again when the fetch position is already past them: that partition never commits again.

**The work-around** (``TableManager=`` app setting, whose ``Recovery`` it builds) keeps Faust's
order and changes only what step 3 drops: messages of partitions this worker no longer owns are
dropped, messages of its current assignment stay queued and are processed. A message the seek
then fetches again is processed twice, which the worker tolerates (replays are recognised by
source offsets; the sink is idempotent).

## A cheaper hand-off of each fetched message (not a defect: a cost)

Faust's fetcher (``Consumer._drain_messages``) hands every message to the conductor with
``wait_first(callback(message), suspend_flow.wait())``: four tasks and an ``asyncio.wait`` per
message, so that a rebalance can interrupt a hand-off that waits. The consumer below runs
Faust's loop with one change: when nothing on the conductor's path can wait (no suspension
asked, flow control open, the producer buffer below its mark), it awaits ``callback(message)``
directly; otherwise it does exactly what Faust does. Measured with ``make bench`` on 3 Dec
(worker events/s): 1,255 without it, 1,566 with it (3686bed, before Worker III: 1,560). It is an
override in our consumer class (the transport above), not a replacement of Faust's method; the
integration suite is its test (every message of every test goes through it).

## Messages become events without the serializer registry (not a defect: a cost)

The worker's topics are ``raw``: a message's key and value are its bytes. Faust's ``Schema``
still asks its serializer registry for each (a codec lookup, settings read through
``app.conf``) before ``app.create_event``: 4.9 µs a message, against 0.6 µs for making the
event directly (measured in-process, 20,000 messages). ``RawSchema`` is that: a ``Schema``,
the extension point Faust's topics take (``app.topic(..., schema=)``) for how a message becomes
an event; ``tests/unit/worker/test_raw_schema.py`` pins its events to the raw ``Schema``'s.

## The producer buffer's size without a settings look-up (not a defect: a cost)

Before it hands each message on, Faust's conductor waits "until the producer buffer ebbs"
(``ProducerBuffer.wait_until_ebb``), which reads the buffer's ``size``, which reads
``app.conf.producer_threaded`` (a settings look-up through ``SettingsRegistry``) every time:
2.7% of a backlog's samples (py-spy ``--gil``, 60,000 events, ee0ab92), for a buffer that holds
almost nothing here (outputs and changelogs go straight to aiokafka: ``pipeline.worker.produce``).
``Producer`` below (the transport's ``Producer``, as ``Consumer`` is its consumer) gives its
buffer a ``size`` that reads the setting once; ``tests/unit/worker/test_producer_buffer.py``
pins it to Faust's.

## Faust's monitor without its per-message statistics (not a defect: a cost)

Faust's ``Monitor`` (a sensor every app has) keeps statistics for its web views: four calls per
message (in, stream in, stream out, out), each counting by topic, stream and task and reading
the clock. This worker serves neither Faust's web views nor its statistics (its metrics are
its own: ``pipeline.worker.metrics``), and those four calls were 1.7% of a backlog's samples
(py-spy, ``make bench``'s stitch_score run, c2fc770). ``Monitor`` below (the ``Monitor=`` app
setting, the extension point Faust documents for a monitor of one's own) keeps everything else
Faust's monitor does (commits, end offsets, rebalances) and skips those four;
``tests/unit/worker/test_monitor.py`` pins it to Faust's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.sensors import Monitor as FaustMonitor
from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer as FaustProducerBuffer

log = logging.getLogger(__name__)

#: The broker URL scheme of ``Transport`` (``faust.transports`` entry point in pyproject.toml).
SCHEME = "ma-kafka"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The thread that owns Faust's aiokafka consumer; its seek to committed offsets also
    rewinds stream partitions that have none (work-around 1 above)."""

    async def seek_to_committed(self) -> Any:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Any:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        never = [
            tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
        ]
        if never:
            await consumer.seek_to_beginning(*never)
        return committed


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, in the thread above."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        """Faust 0.15.3's ``Consumer._drain_messages`` (BSD licence), handing each message to
        the conductor directly when that cannot block (see "A cheaper hand-off" above)."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        flow_active = self.app.flow_control.is_active
        buffer = self.app.producer.buffer

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    # Faust's producer buffer holds almost nothing here (outputs and changelogs
                    # go straight to aiokafka: pipeline.worker.produce); its size, a settings
                    # look-up each time, is read once per 100 messages, not per message.
                    roomy = buffer.size <= buffer.max_messages
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                            roomy = buffer.size <= buffer.max_messages
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if not suspended() and flow_active() and roomy:
                                # Nothing on the conductor's path can wait now (flow control
                                # open, producer buffer below its mark, agent queues far larger
                                # than a batch): no need for Faust's four tasks per message that
                                # let a rebalance interrupt a waiting hand-off.
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    def handed(self, tp: Any) -> int | None:
        """Where Faust got to on ``tp``: the committed offset after a seek (the next to read),
        then the offset of each message it hands to the agents; None before either. (Read
        by the worker's watermarks, ``pipeline.worker.order``.)"""
        offset: int | None = self._read_offset.get(tp)
        return offset


class ProducerBuffer(FaustProducerBuffer):
    """Faust's producer buffer; its ``size`` reads ``producer_threaded`` once (module
    docstring)."""

    _threaded: bool | None = None

    @property
    def size(self) -> int:
        threaded = self._threaded
        if threaded is None:
            threaded = self._threaded = bool(self.app.conf.producer_threaded)  # type: ignore[union-attr]
        if threaded:
            faust_size: int = FaustProducerBuffer.size.fget(self)  # type: ignore[attr-defined]
            return faust_size
        return len(self.pending._queue)  # type: ignore[attr-defined]  # asyncio.Queue's deque


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer with the buffer above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        faust_buffer = self.buffer
        buffer = ProducerBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        if hasattr(faust_buffer, "threaded_producer"):
            buffer.threaded_producer = faust_buffer.threaded_producer
        self.buffer = buffer


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer and producer above:
    ``broker="ma-kafka://host:port"``."""

    Consumer = Consumer
    Producer = Producer


def broker_url(bootstrap: str) -> str:
    """The ``faust.App(broker=...)`` of a bootstrap list ``host:port[,host:port]``."""
    return ";".join(f"{SCHEME}://{server}" for server in bootstrap.split(","))


def _partition_of(item: Any) -> Any:
    message = getattr(item, "message", None)
    return getattr(message, "tp", None)


class Recovery(FaustRecovery):
    """Faust's recovery, keeping queued messages of the current assignment (work-around 2)."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        flow = self.app.flow_control
        consumer = self.app.consumer

        def clear_revoked() -> None:
            assigned = consumer.assignment()
            dropped = 0
            for queue in list(flow._queues):
                items = queue._queue  # type: ignore[attr-defined]  # asyncio.Queue's deque
                kept = [item for item in items if _partition_of(item) in assigned]
                dropped += len(items) - len(kept)
                items.clear()
                items.extend(kept)
            if dropped:
                log.debug("dropped %d queued messages of revoked partitions", dropped)

        flow.clear = clear_revoked  # type: ignore[method-assign]
        try:
            await super().on_recovery_completed(generation_id)
        finally:
            vars(flow).pop("clear", None)  # back to the class's method


class TableManager(FaustTableManager):
    """Faust's table manager with the fixed ``Recovery``: ``faust.App(TableManager=...)``."""

    @property
    def recovery(self) -> FaustRecovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class RawSchema(faust.Schema):  # type: ignore[type-arg]
    """A ``raw`` topic's schema: the event's key and value are the message's bytes (module
    docstring)."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, **_: Any) -> Any:
        event = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        return decode


class Monitor(FaustMonitor):
    """Faust's monitor minus its per-message statistics: ``faust.App(Monitor=...)`` (module
    docstring)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


#: what ``Monitor`` leaves out of Faust's (``tests/unit/worker/test_monitor.py``)
PER_MESSAGE_HOOKS = ("on_message_in", "on_stream_event_in", "on_stream_event_out", "on_message_out")
