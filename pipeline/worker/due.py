"""When each key of a stage next needs it: kept per key, acted on in its partition.

A stage's ``*-due`` table holds, per key that waits, its wake time: the earliest of its pending
delayed triggers and (stage 2) its records held for event-time order (a small table: only keys
that wait). ``DueIndex`` is its in-memory view for the
partitions this worker owns: a heap per partition, loaded from the table when Faust assigns the
partition (after recovery), dropped when the partition is revoked. The stage's timer asks it
for the keys due by now and fires them itself, under the stage's lock, in the worker that owns
the partition: no scan of whole tables, no tick through Kafka.

Example::

    index = DueIndex(worker.contact_due)
    index.sync({0, 1})                  # the partitions assigned now
    changelog = index.set(b"c-1", 1_700_000_000_000)
    index.pop_due(lambda partition: now_ms)   # [b"c-1"] once that time has come
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class DueIndex:
    def __init__(self, table: Any) -> None:
        self.table = table
        self._due: dict[bytes, int] = {}  # what waits to fire (popped once due)
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        # per loaded partition, what its table holds: a write reads no database to compare
        self._stored: dict[int, dict[bytes, int]] = {}

    def sync(self, partitions: set[int]) -> None:
        """Follow the assignment: load newly assigned partitions, forget revoked ones."""
        store = self.table.data
        for partition in set(self._heaps) - partitions:
            for _, key in self._heaps.pop(partition):
                self._due.pop(key, None)
            self._stored.pop(partition, None)
        for partition in partitions - set(self._heaps):
            heap = self._heaps[partition] = []
            stored = self._stored[partition] = {}
            for key, raw in store.items_in(partition):
                due = int(raw)
                self._due[key] = stored[key] = due
                heap.append((due, key))
            heapq.heapify(heap)

    def set(self, key: bytes, due: int | None) -> list[tuple[Any, bytes, bytes | None]]:
        """Record ``key``'s next due time (None: nothing pending); the changelog records."""
        store = self.table.data
        partition = store.partition_of(key)
        stored = self._stored.get(partition)
        if stored is not None:
            current = stored.get(key)
        else:  # not loaded (yet): the table says
            raw = store.get(key)
            current = int(raw) if raw is not None else None
        changelog: list[tuple[Any, bytes, bytes | None]] = []
        if due != current:
            raw_due = None if due is None else str(due).encode()
            store.put(key, raw_due)
            changelog.append((self.table, key, raw_due))
            if stored is not None:
                if due is None:
                    del stored[key]
                else:
                    stored[key] = due
        if due is None:
            self._due.pop(key, None)
        elif self._due.get(key) != due:
            self._due[key] = due
            heap = self._heaps.get(partition)
            if heap is not None:  # else its partition is loaded from the table when assigned
                heapq.heappush(heap, (due, key))
        return changelog

    def pop_due(self, upto: Callable[[int], int]) -> list[bytes]:
        """Keys due by ``upto(partition)`` (a time per partition), in due order, each once."""
        keys: list[bytes] = []
        for partition, heap in self._heaps.items():
            limit = upto(partition)
            while heap and heap[0][0] <= limit:
                due, key = heapq.heappop(heap)
                if self._due.get(key) == due:  # else an entry superseded by a later ``set``
                    del self._due[key]  # until firing ``set``s the next one
                    keys.append(key)
        return keys

    def waiting(self) -> list[bytes]:
        """The keys of the loaded partitions that the table says wait (a due time set)."""
        return [key for stored in self._stored.values() for key in stored]

    def pending(self) -> int:
        return len(self._due)
