"""The two Faust defects the worker works around, each through a Faust extension point.

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
"""

from __future__ import annotations

import logging
from typing import Any

from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from faust.transport.drivers import aiokafka as faust_aiokafka

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

    def handed(self, tp: Any) -> int | None:
        """Where Faust got to on ``tp``: the committed offset after a seek (the next to read),
        then the offset of each message it hands to the agents; None before either. (Read
        by the worker's watermarks, ``pipeline.worker.order``.)"""
        offset: int | None = self._read_offset.get(tp)
        return offset


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above: ``broker="ma-kafka://host:port"``."""

    Consumer = Consumer


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
