"""The one way the pipeline's own processes produce to Kafka outside Faust: durable JSON.

``acks=all`` with the idempotent producer; ``send_all`` returns only once the broker has
acknowledged every record, and raises ``BrokerUnavailable`` when it does not within the timeout
(the collector answers ``503`` then).

After an outage, records that timed out leave gaps in the idempotent producer's sequence
numbers; the broker then refuses every later batch (``OutOfOrderSequenceNumber``) and aiokafka
does not recover by itself. ``JsonProducer`` replaces its producer (a new producer id) when that
happens, so sends succeed again once the broker is back.

Example::

    producer = JsonProducer(settings)
    await producer.start()
    await producer.send_all([(settings.topic("events"), key, value_bytes)])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from pipeline import codec
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]

#: The producer's idempotence state no longer matches the broker's: only a new producer helps.
_STALE_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


class JsonProducer:
    """A started-once aiokafka producer with durable, batched sends."""

    def __init__(
        self,
        settings: Settings,
        *,
        ack_timeout: float = 5.0,
        linger_ms: int = 2,
        client_id: str = "ma-pipeline",
    ) -> None:
        self.settings = settings
        self.ack_timeout = ack_timeout
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "max_request_size": 2 * 1024 * 1024,
            "compression_type": None,
            "request_timeout_ms": int(ack_timeout * 1000) + 5000,
            "retry_backoff_ms": 100,
        }
        self._producer = AIOKafkaProducer(**self._options)
        self._started = False
        self._replacing: asyncio.Lock | None = None
        self._retired: set[asyncio.Task[None]] = set()
        #: How many times a stale producer was replaced (for logs and tests).
        self.replacements = 0

    async def start(self, give_up_after: float | None = None) -> None:
        """Connect, retrying until the broker answers (a collector may start before Kafka);
        with ``give_up_after`` seconds, raise ``BrokerUnavailable`` instead of waiting longer."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after is None else loop.time() + give_up_after
        delay = 0.5
        while True:
            try:
                await self._producer.start()
                self._started = True
                return
            except KafkaError as exc:
                if deadline is not None and loop.time() > deadline:
                    await _stop_quietly(self._producer, 1)
                    raise BrokerUnavailable(
                        f"cannot reach the Kafka broker at {self.settings.bootstrap} ({exc}); "
                        "start it with `ma-pipeline broker start` (or `make run`), or set "
                        "MA_KAFKA_BOOTSTRAP"
                    ) from exc
                log.warning(
                    "broker %s not reachable yet (%s); retrying", self.settings.bootstrap, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    async def send_all(self, records: Iterable[Record]) -> None:
        """Send records and wait until every one is acknowledged (``acks=all``)."""
        if not self._started:
            raise BrokerUnavailable("not connected to the broker yet")
        producer = self._producer
        try:
            async with asyncio.timeout(self.ack_timeout):
                futures = [
                    await producer.send(topic, value=value, key=key)
                    for topic, key, value in records
                ]
                if futures:
                    await asyncio.gather(*futures)
        except _STALE_PRODUCER as exc:
            await self._replace(producer)
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def _replace(self, stale: AIOKafkaProducer) -> None:
        """Start a new producer in place of ``stale`` (once, however many sends saw it fail)."""
        self._replacing = self._replacing or asyncio.Lock()
        async with self._replacing:
            if self._producer is not stale or not self._started:
                return  # another send replaced it already, or we are stopping
            fresh = AIOKafkaProducer(**self._options)
            try:
                async with asyncio.timeout(self.ack_timeout + 5):
                    await fresh.start()
            except (TimeoutError, KafkaError) as exc:
                log.warning("could not start a new producer yet (%s); the next send retries", exc)
                await _stop_quietly(fresh, self.ack_timeout)
                return
            self._producer = fresh
            self.replacements += 1
            log.warning(
                "the broker refused the producer's sequence numbers (records timed out during an "
                "outage); replaced it with a new producer"
            )
            task = asyncio.create_task(_stop_quietly(stale, self.ack_timeout))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def send_json(self, topic: str, key: str | None, value: Any) -> None:
        """Send one JSON value durably."""
        await self.send_all([(topic, key.encode() if key else None, codec.dumps(value))])

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when a metadata request to the broker succeeds now."""
        if not self._started:
            return False
        try:
            async with asyncio.timeout(timeout):
                # False when no broker answered; the cluster still lists the brokers it knew.
                updated = await self._producer.client.force_metadata_update()
            return bool(updated) and bool(self._producer.client.cluster.brokers())
        except (TimeoutError, KafkaError):
            return False


async def _stop_quietly(producer: AIOKafkaProducer, timeout: float) -> None:
    """Stop a producer that is being given up on; its unsent records were already refused."""
    try:
        async with asyncio.timeout(timeout):
            await producer.stop()
    except (TimeoutError, KafkaError) as exc:
        log.debug("a replaced producer did not stop cleanly: %s", exc)
