"""A fix for a faust-streaming 0.15.3 recovery race that stops partitions committing.

**The race** (faust-streaming issue #596, open). A worker that starts or rebalances restores its
tables first, with the fetcher running and the stream partitions paused. When the tables are
restored, ``Recovery.on_recovery_completed``:

1. resumes the stream partitions: the running fetcher starts handing stream messages to the
   agents' queues (each one counted as read and tracked as not yet acknowledged);
2. seeks every partition to its committed offset: one broker round trip per partition, a
   fraction of a second during which step 1 keeps delivering;
3. calls ``app.flow_control.resume()``, which *empties every agent queue*
   (``FlowControlQueue(clear_on_resume=True)``, meant for messages of revoked partitions).

Messages delivered in step 2 and still queued at step 3 are dropped: never processed, never
acknowledged, and not fetched again when the fetch position is already past them. Faust commits
a partition only up to its first unacknowledged offset (``Consumer._new_offset``), so such a
partition never commits again: its lag never drains, and every restart processes it again.
Traced on our worker after a ``kill -9``: ``x.contact-work:2`` had offsets 0–55 delivered during
the seek, 0–31 processed, 32–55 cleared, then 56–118 acknowledged behind the gap for good.

**The fix** keeps Faust's order and changes only what step 3 drops: messages of partitions this
worker no longer owns (what the clearing is for) are dropped, messages of its current assignment
stay queued and are processed. A message the seek then fetches again is processed twice, which
the worker already tolerates (replays are detected by source offsets, the sink is idempotent).

This reaches into Faust internals, so importing this module checks that the Faust code it relies
on is the 0.15.3 code it was written against, and refuses to run otherwise.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

import faust
from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"

#: sha256 of the source of each Faust/mode function this module relies on, as in 0.15.3.
_EXPECTED = {
    FaustRecovery.on_recovery_completed: (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    ),
    FaustTableManager.recovery.fget: (  # type: ignore[attr-defined]
        "f0bf5de78b4c3d235c3554010480f407010ccb7c481c68852a985542b952df32"
    ),
}


def check_faust() -> None:
    """Refuse to run on a Faust whose code differs from what this fix was written against."""
    if faust.__version__ != FAUST_VERSION:
        raise RuntimeError(
            f"pipeline.worker.faust_fixes is written for faust-streaming {FAUST_VERSION}, "
            f"found {faust.__version__}: check whether the recovery race (faust-streaming "
            "#596) is fixed there, then update or drop this fix"
        )
    for function, expected in _EXPECTED.items():
        source = inspect.getsource(function).encode()
        if hashlib.sha256(source).hexdigest() != expected:
            raise RuntimeError(
                f"faust's {function.__qualname__} is not the faust-streaming {FAUST_VERSION} "
                "code pipeline.worker.faust_fixes was written against: re-check the fix"
            )
    if "self.clear()" not in inspect.getsource(FlowControlEvent.resume):
        raise RuntimeError("mode's FlowControlEvent.resume no longer clears its queues itself")


check_faust()


def _partition_of(item: Any) -> Any:
    message = getattr(item, "message", None)
    return getattr(message, "tp", None)


class Recovery(FaustRecovery):
    """Faust's recovery, keeping queued messages of the current assignment (see above)."""

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
