"""Stage 1's hand-overs to stage 2: one ``x.contact-work`` record per partition per batch.

Stage 1 makes about one hand-over per event: the event resolved to its contact, identity
notices, a cookie's history (``steps``' ``contact-work`` outputs). Sent as a record each, stage
2 read every one of them through Faust's per-message path (a Faust event, a stream step, an
acknowledgement): the largest single cost in the worker's profile then, and grouped the worker
ran about 35% faster (``make bench``'s ``worker.stitch_score``, back to back). So a batch's
hand-overs go out grouped by the partition their contact's key hashes to, a record per partition::

    {"k": "batch", "m": [[contact_id, message], ...]}

in the order they were decided (split at ``ENVELOPE_BYTES``). Stage 2 (``contact.ContactStage``)
and the sink take each ``[contact_id, message]`` as they took a record of its own; the
envelope's offset stands for all of its messages in each contact's replay check. Kafka's order
within a partition is all stage 2 relies on (a watermark follows the hand-overs it covers), and
an envelope keeps it: the stage emits its envelopes before the batch's closing watermarks.

Example::

    hand = HandOver(partitions=4)
    rest = hand.take(outs)        # what is not a hand-over: emit it as it is
    envelopes = hand.envelopes()  # [(partition, JSON bytes)], one per partition (or more)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline import codec
from pipeline.kafka import partition_for
from pipeline.topics import CONTACT_WORK
from pipeline.worker.steps import Out

#: an envelope's size at most (bytes of JSON): well under the producer's batch (512 KiB) and
#: the broker's 1 MB record limit, so that one event at the collector's largest still fits
ENVELOPE_BYTES = 256 * 1024
KIND = "batch"

_OPEN = b'{"k":"' + KIND.encode() + b'","m":['
_CLOSE = b"]}"


def hand_overs(value: Any) -> list[Any] | None:
    """The ``[contact_id, message]`` pairs of an envelope; None for any other value."""
    if isinstance(value, dict) and value.get("k") == KIND:
        pairs: list[Any] = value["m"]
        return pairs
    return None


class HandOver:
    """The hand-overs of one batch (or one time-driven pass), grouped by partition."""

    def __init__(self, partitions: int) -> None:
        self._partitions = list(range(partitions))
        self._items: dict[int, list[bytes]] = {}

    def take(self, outs: Iterable[Out]) -> list[Out]:
        """Keep the keyed ``contact-work`` records of ``outs``; return the others."""
        rest: list[Out] = []
        items = self._items
        partitions = self._partitions
        for out in outs:
            if out.topic == CONTACT_WORK and out.key is not None and out.partition is None:
                q = partition_for(out.key.encode(), partitions)
                bucket = items.get(q)
                if bucket is None:
                    bucket = items[q] = []
                bucket.append(codec.dumps([out.key, out.value]))
            else:
                rest.append(out)
        return rest

    def envelopes(self) -> list[tuple[int, bytes]]:
        """``(partition, value)`` of the envelopes of what was taken, and forget it."""
        envelopes: list[tuple[int, bytes]] = []
        for q, items in self._items.items():
            chunk: list[bytes] = []
            size = 0
            for item in items:
                if chunk and size + len(item) > ENVELOPE_BYTES:
                    envelopes.append((q, _OPEN + b",".join(chunk) + _CLOSE))
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item) + 1
            envelopes.append((q, _OPEN + b",".join(chunk) + _CLOSE))
        self._items = {}
        return envelopes
