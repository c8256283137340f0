"""Which rows a deduplicated table may already hold: a Bloom filter of every key it stores.

The sink must not store a row twice (CONTRACT §6), yet it sees rows twice: its own replays after
a crash, the worker's at-least-once repeats, a producer's resent event. Asking ClickHouse about
every key of every batch cost more than the insert itself, and more as tables grow. Instead the
sink keeps, per table, a Bloom filter of the keys stored (``StoredKeys``): loaded from the table
when the sink starts (and again after a rebalance gave it other partitions), extended by every
insert. A key the filter has never seen is certainly new; only the keys it may have seen (the
repeats, and about one in 70,000 new keys) are looked up, so most batches ask nothing.

Keys are hashed the same way on both sides: XXH3 (64 bits, seed 0) of the key's columns joined by
``\\x1f``, ClickHouse's ``xxh3`` there and the ``xxhash`` package here (a tenth of the time
``hashlib.md5`` took per key, which was the sink's largest cost after the insert itself).

Example::

    stored = StoredKeys()
    stored.add(key_hashes([("e-1",), ("e-2",)]))
    stored.may_hold(key_hashes([("e-1",), ("e-3",)]))   # array([ True, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

#: bits per key and hash functions: a false positive for about 1 in 70,000 new keys
#: ((1 - e^(-12/24))^12); 17 functions (the optimum, 1 in 100,000) cost 40% more per key
BITS_PER_KEY = 24
HASHES = 12
#: the first layer's capacity in keys; each further layer (when one fills up) doubles it
FIRST_CAPACITY = 1 << 20
SEPARATOR = "\x1f"

Hashes = npt.NDArray[np.uint64]


def key_hashes(keys: Sequence[tuple[Any, ...]]) -> Hashes:
    """Each key's hash, as ClickHouse's ``xxh3`` of ``key_expression``'s text computes it."""
    xxh3 = xxhash.xxh3_64_intdigest
    if keys and len(keys[0]) == 1:  # one column (events, triggers): no join
        hashes = [xxh3(str(key).encode()) for (key,) in keys]
    else:
        join = SEPARATOR.join
        hashes = [xxh3(join(map(str, key)).encode()) for key in keys]
    return np.array(hashes, dtype=np.uint64)


def key_expression(columns: Sequence[str], time_columns: set[str]) -> str:
    """The SQL that hashes a row's key as ``key_hashes`` does (times as epoch milliseconds)."""
    parts = []
    for column in columns:
        parts.append(
            f"toString(toUnixTimestamp64Milli({column}))" if column in time_columns else column
        )
    text = parts[0] if len(parts) == 1 else f"concat({', char(31), '.join(parts)})"
    return f"xxh3({text})"


class _Layer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.count = 0
        self.size = capacity * BITS_PER_KEY
        self.bits = np.zeros((self.size + 7) // 8, dtype=np.uint8)

    def _positions(self, hashes: Hashes) -> Hashes:
        # double hashing: position i = h1 + i * h2 (mod size), h2 odd
        h1 = hashes
        h2 = (hashes >> np.uint64(29)) | np.uint64(1)
        steps = np.arange(HASHES, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            positions: Hashes = (h1[None, :] + steps * h2[None, :]) % np.uint64(self.size)
        return positions

    def add(self, hashes: Hashes) -> None:
        positions = self._positions(hashes).ravel()
        masks = np.left_shift(np.uint8(1), (positions & np.uint64(7)).astype(np.uint8))
        np.bitwise_or.at(self.bits, positions >> np.uint64(3), masks)
        self.count += len(hashes)

    def may_hold(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        positions = self._positions(hashes)
        found = (self.bits[positions >> np.uint64(3)] >> (positions & np.uint64(7))) & 1
        result: npt.NDArray[np.bool_] = found.all(axis=0)
        return result


class StoredKeys:
    """A growing Bloom filter: layers of doubling capacity, a key held if any layer may hold it."""

    def __init__(self, expected: int = 0) -> None:
        capacity = FIRST_CAPACITY
        while capacity < expected * 2:
            capacity *= 2
        self._layers = [_Layer(capacity)]

    def __len__(self) -> int:
        return sum(layer.count for layer in self._layers)

    def add(self, hashes: Hashes) -> None:
        while len(hashes):
            layer = self._layers[-1]
            room = layer.capacity - layer.count
            if room <= 0:
                self._layers.append(_Layer(layer.capacity * 2))
                continue
            layer.add(hashes[:room])
            hashes = hashes[room:]

    def may_hold(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        held = np.zeros(len(hashes), dtype=np.bool_)
        for layer in self._layers:
            if layer.count:
                held |= layer.may_hold(hashes)
        return held
