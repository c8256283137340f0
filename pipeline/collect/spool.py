"""Records the collector answered for without the broker's acknowledgement.

Pixels, email clicks and opens must answer at once (the GIF, the redirect) even while the
broker is away; their records wait here, in memory, and are re-sent until the broker takes
them. ``/v1/batch`` never uses the spool: it answers ``503`` and the client retries.

Bounded: past ``max_records`` the oldest are dropped (and counted). A collector that stops
while records wait tries once more to send them; what it cannot send is logged as lost.

Example::

    spool = Spool(max_records=50_000)
    spool.add(records)                # after a send the broker did not acknowledge
    batch = spool.take(500)           # later: re-send, and on failure
    spool.put_back(batch)             # keep them, first in line
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from pipeline.codec import held
from pipeline.kafka import Record


class Spool:
    """A bounded first-in, first-out queue of records waiting for the broker."""

    def __init__(self, max_records: int = 50_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.max_records = max_records
        self.dropped = 0
        self._records: deque[Record] = deque()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[Record]) -> int:
        """Queue records at the back; how many old ones were dropped to make room.

        Values are kept right-sized (``codec.held``): a full spool would otherwise take
        eight times the memory of its records.
        """
        self._records.extend(
            (topic, key, None if value is None else held(value)) for topic, key, value in records
        )
        return self._trim()

    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records from the front (removed from the spool)."""
        return [self._records.popleft() for _ in range(min(limit, len(self._records)))]

    def put_back(self, records: list[Record]) -> int:
        """Return records that still could not be sent to the front, in their order."""
        self._records.extendleft(reversed(records))
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while len(self._records) > self.max_records:
            self._records.popleft()
            dropped += 1
        self.dropped += dropped
        return dropped
