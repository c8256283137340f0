"""Reading topics in tests: everything on a topic, or until a condition holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline import codec


class TopicReader:
    """Reads a topic from the beginning and keeps every value seen (JSON-decoded).

    Example::

        async with TopicReader(bootstrap, "t1.events") as events:
            values = await events.wait_for(lambda vs: len(vs) >= 3)
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.values: list[Any] = []
        self.keys: list[bytes | None] = []
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            metadata_max_age_ms=1000,
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            for record in records:
                self.keys.append(record.key)
                self.values.append(codec.loads(record.value) if record.value else None)

    async def wait_for(
        self, condition: Callable[[list[Any]], bool], timeout: float = 20
    ) -> list[Any]:
        """Poll until ``condition(values)`` holds; fail with what was seen if it never does."""
        try:
            async with asyncio.timeout(timeout):
                while not condition(self.values):
                    await self.poll()
        except TimeoutError:
            raise AssertionError(
                f"condition not met on {self.topic} within {timeout}s; saw {self.values!r:.2000}"
            ) from None
        return self.values

    async def settle(self, quiet: float = 1.0) -> list[Any]:
        """Read until nothing new arrives for ``quiet`` seconds."""
        while True:
            before = len(self.values)
            await self.poll(int(quiet * 1000))
            if len(self.values) == before:
                return self.values


async def read_all(bootstrap: str, topic: str, quiet: float = 1.0) -> list[Any]:
    async with TopicReader(bootstrap, topic) as reader:
        return await reader.settle(quiet)
