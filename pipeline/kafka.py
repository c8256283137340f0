"""The one way the pipeline's own processes produce to Kafka outside Faust: durable JSON.

``acks=all`` with the idempotent producer; ``send_all`` returns only once the broker has
acknowledged every record, and raises ``BrokerUnavailable`` when it does not within the timeout
(the collector answers ``503`` then).

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
from aiokafka.errors import KafkaError

from pipeline import codec
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]


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
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=2 * 1024 * 1024,
            compression_type=None,
            request_timeout_ms=int(ack_timeout * 1000) + 5000,
            retry_backoff_ms=100,
        )
        self._started = False

    async def start(self) -> None:
        """Connect; retries until the broker answers (a collector may start before Kafka)."""
        delay = 0.5
        while True:
            try:
                await self._producer.start()
                self._started = True
                return
            except KafkaError as exc:
                log.warning(
                    "broker %s not reachable yet (%s); retrying", self.settings.bootstrap, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    async def send_all(self, records: Iterable[Record]) -> None:
        """Send records and wait until every one is acknowledged (``acks=all``)."""
        try:
            async with asyncio.timeout(self.ack_timeout):
                futures = [
                    await self._producer.send(topic, value=value, key=key)
                    for topic, key, value in records
                ]
                if futures:
                    await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def send_json(self, topic: str, key: str | None, value: Any) -> None:
        """Send one JSON value durably."""
        await self.send_all([(topic, key.encode() if key else None, codec.dumps(value))])

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when a metadata request to the broker succeeds now."""
        if not self._started:
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._producer.client.force_metadata_update()
            return bool(self._producer.client.cluster.brokers())
        except (TimeoutError, KafkaError):
            return False
