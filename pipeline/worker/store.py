"""Table stores that keep each key in its own partition: ``MA_STORE=rocksdb://`` or ``memory://``.

Our tables use the key's partitioner (``use_partitioner=True``): a key's changelog records, so
its state after a recovery, are in partition ``partition_for(key)``. Faust's RocksDB store does
not use that. It looks a key up in every partition's database until it finds it (a new cookie,
the most common lookup, is missing from all of them: eight lookups), and it files a write under
the partition of whichever event is current. These stores go to the key's one partition, and
can list one partition's items (what the due index loads when a partition is assigned).

They are Faust stores, registered under Faust's own store registry (the ``faust.stores`` entry
points in ``pyproject.toml``: ``ma-rocksdb://`` and ``ma-memory://``), so Faust opens, recovers
and revokes them as it does its own.

Example::

    store = worker.cookies.data          # a Store below
    store.put(b"aid-1", b"{...}")
    store.get(b"aid-1")                  # b"{...}"
    list(store.items_in(3))              # [(key, value), ...] of partition 3
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import rocksdict
from faust.stores import memory, rocksdb

from pipeline.kafka import murmur2


class _Keyed:
    """What both stores share: the partition of a key."""

    table: Any

    def partition_of(self, key: bytes) -> int:
        partitions: int = self.table.partitions
        return (murmur2(key) & 0x7FFFFFFF) % partitions  # as ``partition_for``


class RocksDBStore(_Keyed, rocksdb.Store):
    """Faust's RocksDB store, one database per partition, each key in its own partition.

    Without RocksDB's write-ahead log: the changelog topic is the log. After a crash a
    database holds a prefix of its writes (one column family: memtables are flushed in write
    order), so its persisted changelog offset, written after the state it covers, is never
    ahead of that state, and recovery replays the changelog from there (as Kafka Streams runs
    its RocksDB stores). It saves a write and a sync per batch, and leaves no log of erased
    state on disk.
    """

    def _open_for_partition(self, partition: int) -> Any:
        db = super()._open_for_partition(partition)
        options = rocksdict.WriteOptions()
        options.disable_wal = True  # type: ignore[method-assign, assignment]  # a property (the stub says method)
        db.set_write_options(options)
        return db

    def get(self, key: bytes, default: Any = None) -> Any:
        # Only a partition this worker holds (its database is open, as Faust's reads require):
        # another worker's partition may have left stale data on this disk.
        db = self._dbs.get(self.partition_of(key))
        value = None if db is None else db.get(key)
        return default if value is None else value

    def put(self, key: bytes, value: bytes | None) -> None:
        """Write ``value`` for ``key``; ``None`` deletes the key."""
        db = self._db_for_partition(self.partition_of(key))
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)

    def put_many(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """``put`` each ``(key, value)``, one write batch per partition's database."""
        batches: defaultdict[int, Any] = defaultdict(lambda: rocksdict.WriteBatch(raw_mode=True))
        for key, value in items:
            batch = batches[self.partition_of(key)]
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for partition, batch in batches.items():
            self._db_for_partition(partition).write(batch)

    def scrub(self, keys: Iterable[bytes]) -> None:
        """Rewrite the files of the databases holding ``keys`` so that no earlier value of
        theirs stays on disk (erasure): flush the memtable, then a full compaction, forced
        down to the bottommost level (a key's old value and its tombstone or new value meet
        and the old one is dropped; the old files are deleted)."""
        options = rocksdict.CompactOptions()
        options.set_bottommost_level_compaction(rocksdict.BottommostLevelCompaction.force())
        for partition in sorted({self.partition_of(key) for key in keys}):
            db = self._dbs.get(partition)
            if db is not None:
                db.flush()
                db.compact_range(None, None, options)

    def items_in(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        db = self._dbs.get(partition)
        if db is not None:
            yield from self._visible_items(db)

    # Faust's own paths (``table[key]``, recovery's ``_contains``) agree with the above.
    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.get(key)
        return value

    def _set(self, key: bytes, value: bytes | None) -> None:
        self.put(key, value)

    def _del(self, key: bytes) -> None:
        self.put(key, None)


class MemoryStore(_Keyed, memory.Store[bytes, bytes]):
    """Faust's in-memory store (tests), remembering each key's partition so that a revoked
    partition's keys are dropped as Faust drops the ones it recovered."""

    def scrub(self, keys: Iterable[bytes]) -> None:
        """Nothing of it is on disk."""

    def put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        else:
            self.data[key] = value
            self._key_partition[key] = self.partition_of(key)

    def put_many(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        for key, value in items:
            self.put(key, value)

    def items_in(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        for key, value in list(self.data.items()):
            if value is not None and self.partition_of(key) == partition:
                yield key, value


def store_url(url: str) -> str:
    """``MA_STORE`` (``rocksdb://``, ``memory://``) → the store above registered for it."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("rocksdb", "memory"):
        raise ValueError(f"MA_STORE={url!r}: expected rocksdb:// or memory://")
    return f"ma-{scheme}://{rest}"
