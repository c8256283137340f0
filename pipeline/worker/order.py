"""Event-time order for stage 2: watermarks, the frontier, and each contact's inbox.

A contact's records reach stage 2 from every partition of stage 1 (its cookies hash anywhere)
and from ``ma.contact-updates``; how they interleave depends on which partition was read first,
which worker ran it, and when. Applied in arrival order, a contact with two cookies crosses a
score threshold at one event or another. So stage 2 applies each contact's records in event
time order (``received_at``, then ``event_id``, then where the record came from), once every
source has passed that time:

- **Watermarks.** Stage 1 sends every ``x.contact-work`` partition a ``{"k": "wm", "w":
  {source: time}, "idle": [source, ...]}`` record after each batch: per ``ma.events`` partition
  it owns (``e<n>``), the ``received_at`` of the last event it handled there, and whether it has
  read all there is (*idle*). Kafka keeps a partition's order, so a watermark follows the
  hand-overs it covers. An idle source needs no more records: stage 2 counts it as ``now -
  MA_ORDER_WAIT`` by its own clock (an event may reach Kafka that much after the collector
  stamped it) until the source says otherwise: stage 1 sends a busy watermark (not idle) before
  it starts on new events of an idle partition, and its claims again after a rebalance. So an
  idle pipeline's topics go quiet.
- **The frontier** of a stage-2 partition is the lowest watermark over all sources: every
  stage-1 partition, and its own ``ma.contact-updates`` partition (read by stage 2 itself, with
  the same rule). A source not heard from since the partition was assigned counts as ``now -
  MA_ORDER_WAIT`` after ``MA_ORDER_WAIT`` + ``SILENT_AFTER``, so waits stay bounded.
- **The inbox.** A record is deduplicated on receipt and held in its contact's state (so the
  input can be acknowledged: the inbox is as durable as the rest of the state), under its
  ``order_key``. The contact's wake time (its earliest held record, or its earliest pending
  delayed trigger) is in the stage's ``DueIndex``; whenever the frontier passes it, the stage
  releases the contact's records and due triggers up to the frontier, in order.
- A record that arrives behind the frontier (later than ``MA_ORDER_WAIT``) is applied at once,
  and counted (``ma_worker_decisions_total{what="late"}``).

Example::

    frontier = Frontier(partitions=4, wait_ms=500)
    frontier.heard(0, "e1", 1_700_000_000_000, idle=False)
    frontier.value(0, now_ms, wall)      # the time up to which partition 0 may release
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

#: Seconds beyond ``MA_ORDER_WAIT`` after which a source not heard from at all (since the
#: partition was assigned) no longer holds others back: longer than a worker takes to send its
#: first watermarks after a start or a rebalance.
SILENT_AFTER = 5.0
#: Records held per contact at most; beyond it the oldest is released regardless (counted).
INBOX_LIMIT = 2_000
NEVER = -(2**62)

#: The order of records at the same time and event: identity notices, the contact update of
#: a form, the cookie's history, then the event itself (as stage 1 emits them for one event).
_RANK = {"unlinked": 0, "linked": 1, "update": 2, "absorb": 3, "event": 4}


def order_key(message: dict[str, Any], at: int, source: int, offset: int) -> list[Any]:
    """Where ``message`` goes in its contact's order: ``[received_at ms, event_id, rank, source
    rank, partition, offset, index]``; ``source`` 0 for ``x.contact-work``, 1 for updates."""
    kind = message.get("k", "update")
    if kind == "event":
        event_id = str(message["e"].get("event_id") or "")
    else:
        event_id = str(message.get("event_id") or "")
    src = message.get("src") or [-1, offset, 0]
    return [at, event_id, _RANK.get(kind, 5), source, *src]


@dataclass
class _Source:
    w: int = NEVER
    idle: bool = False


@dataclass
class Frontier:
    """Per stage-2 partition, the watermark of each source (``e<n>``: ``ma.events`` partition n
    through stage 1; ``u``: this partition of ``ma.contact-updates``)."""

    partitions: int
    wait_ms: int
    _sources: dict[int, dict[str, _Source]] = field(default_factory=dict)
    _since: dict[int, float] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [f"e{n}" for n in range(self.partitions)] + ["u"]

    def assigned(self, partitions: set[int], wall: float | None = None) -> None:
        wall = time.monotonic() if wall is None else wall
        for q in set(self._sources) - partitions:
            del self._sources[q]
            del self._since[q]
        for q in partitions - set(self._sources):
            self._sources[q] = {}
            self._since[q] = wall

    def heard(self, q: int, source: str, w: int, *, idle: bool, wall: float | None = None) -> None:
        sources = self._sources.setdefault(q, {})
        self._since.setdefault(q, time.monotonic() if wall is None else wall)
        entry = sources.setdefault(source, _Source())
        entry.w = max(entry.w, w)
        entry.idle = idle

    def value(self, q: int, now_ms: int, wall: float | None = None) -> int:
        """The time up to which partition ``q`` may release: the lowest watermark, an idle
        source (or one never heard from for too long) counting as ``now - MA_ORDER_WAIT``."""
        wall = time.monotonic() if wall is None else wall
        sources = self._sources.get(q, {})
        unheard_too_long = wall - self._since.get(q, wall) > self.wait_ms / 1000 + SILENT_AFTER
        floor = now_ms - self.wait_ms
        lowest: int | None = None
        for name in self.names():
            entry = sources.get(name)
            if entry is None:
                w = floor if unheard_too_long else NEVER
            else:
                w = max(entry.w, floor) if entry.idle else entry.w
            lowest = w if lowest is None else min(lowest, w)
        return NEVER if lowest is None else lowest


def hold(inbox: list[list[Any]], key: list[Any], message: dict[str, Any]) -> bool:
    """Put ``message`` in ``inbox`` (kept sorted) under ``key``; False when full."""
    entry = [*key, message]
    if not inbox or inbox[-1][:-1] <= key:  # most records arrive in order: no search
        inbox.append(entry)
    else:
        bisect.insort(inbox, entry, key=lambda e: e[:-1])
    return len(inbox) <= INBOX_LIMIT


def wake_time(inbox: list[list[Any]], pending: list[dict[str, Any]]) -> int | None:
    """When the key next needs the stage: its earliest held record or pending trigger."""
    times = [inbox[0][0]] if inbox else []
    if pending:
        times.append(min(p["due_at"] for p in pending))
    return min(times) if times else None
