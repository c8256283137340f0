"""The one topic registry: every topic the pipeline reads or writes, its key and retention.

Names carry the prefix ``MA_TOPIC_PREFIX`` (``ma.`` by default). ``ensure_topics`` creates
missing ones idempotently at start-up. Faust's own table changelogs are named after the app id.

Example::

    await ensure_topics(settings)           # all of them
    settings.topic(EVENTS.name)             # 'ma.events'
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """A topic: short name (without prefix), key, cleanup policy and what it carries."""

    name: str
    key: str
    description: str
    cleanup: str = "delete"
    retention_ms: int = 7 * DAY_MS
    public: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup, **self.extra}
        if "delete" in self.cleanup:
            config["retention.ms"] = str(self.retention_ms)
        return config


EVENTS = TopicSpec("events", "anonymous_id, else contact_id", "every accepted inbound event")
CONTACT_UPDATES = TopicSpec(
    "contact-updates",
    "contact_id",
    "raw contact upserts with their source",
    retention_ms=14 * DAY_MS,
)
CONTACTS = TopicSpec(
    "contacts", "contact_id", "the merged contact on every change", cleanup="compact"
)
IDENTITIES = TopicSpec(
    "identities", "anonymous_id", "link and re-link decisions", retention_ms=90 * DAY_MS
)
SCORES = TopicSpec("scores", "contact_id", "score changes")
TRIGGERS = TopicSpec("triggers", "contact_id or anonymous_id", "the public trigger output")
DEAD_LETTER = TopicSpec(
    "dead-letter", "none", "every rejected input with the reason", retention_ms=14 * DAY_MS
)

PUBLIC_TOPICS: tuple[TopicSpec, ...] = (
    EVENTS,
    CONTACT_UPDATES,
    CONTACTS,
    IDENTITIES,
    SCORES,
    TRIGGERS,
    DEAD_LETTER,
)
#: Internal topics between worker stages register here too (see ``pipeline.worker``).
INTERNAL_TOPICS: list[TopicSpec] = []


def all_topics() -> tuple[TopicSpec, ...]:
    return (*PUBLIC_TOPICS, *INTERNAL_TOPICS)


async def ensure_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    specs = specs or all_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=spec.config(),
            )
            for spec in specs
            if settings.topic(spec.name) not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        created = []
        for topic, code, *message in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:  # a racing process made it: fine
                raise KafkaError(f"cannot create topic {topic}: error {code} {message}")
        await _wait_for_leaders(admin, created)
        log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 15
) -> None:
    """New topics answer NotLeaderForPartition until their leaders are elected: wait for them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while names and asyncio.get_running_loop().time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            return
        await asyncio.sleep(0.1)
