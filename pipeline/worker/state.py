"""A table's store, read and written in the key's own partition.

Our tables use the key's partitioner (``use_partitioner=True``): a key's changelog records, so
its state after a recovery, are in partition ``partition_for(key)``. Faust's RocksDB store does
not use that. It looks a key up in every partition's database until it finds it (a new cookie,
the most common lookup, is missing from all of them: eight lookups). It files a write under
the partition of whichever event is current. ``TableState`` goes to the one database instead.
With the memory store (tests) the store is a plain mapping, used as it is.

Example::

    cookies = TableState(worker.cookies, partitions=8)
    cookies.put(b"aid-1", b"{...}")
    cookies.get(b"aid-1")     # b"{...}"
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore

from pipeline.kafka import partition_for


class TableState:
    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = list(range(partitions))

    def get(self, key: bytes) -> bytes | None:
        store = self.table.data
        if not isinstance(store, RocksDBStore):
            value: bytes | None = store.get(key)
            return value
        # Only a partition this worker holds (its database is open, as Faust's reads require):
        # another worker's partition may have left stale data on this disk.
        db = store._dbs.get(partition_for(key, self.partitions))
        return None if db is None else db.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        """Write ``value`` for ``key``; ``None`` deletes the key."""
        store = self.table.data
        if not isinstance(store, RocksDBStore):
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
            return
        # Opens the partition's database if need be, as Faust's own writes do.
        db = store._db_for_partition(partition_for(key, self.partitions))
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
