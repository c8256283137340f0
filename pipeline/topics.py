"""The one topic registry: every topic the pipeline reads or writes, its key and retention.

It holds the public topics, the internal ``x.*`` topics between the worker's stages (both named
with the prefix ``MA_TOPIC_PREFIX``, ``ma.`` by default), and the changelogs of the worker's tables,
which Faust names after the app id (``<MA_APP_ID>-<table>-changelog``). ``ensure_topics``
creates the missing ones idempotently, and every process that consumes or produces calls it
before it starts (``worker``, ``collector``, ``run``, ``topics``): a consumer group that starts
before one of its topics exists is assigned none of its partitions, and Faust hides a table
whose changelog it was not assigned (that is how delayed triggers once never fired).

The topics the worker's stages read side by side, and its tables' changelogs, must have
``MA_TOPIC_PARTITIONS`` partitions each (``co_partitioned``): partition *n* of each belongs to
the same stage instance, and stage 1 addresses stage 2's partitions by that number
(``pipeline.worker.handover``). ``ensure_topics`` refuses to go on when an existing one has
another count (``TopicLayoutError``), rather than let a contact's records split between two
partitions. The other topics may have any count (downstream consumers may want more).

Example::

    await ensure_topics(settings)           # all of them
    settings.topic(EVENTS.name)             # 'ma.events'
    topic_name(settings, TABLES[0])         # 'ma-pipeline-cookies-changelog'
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import StartError
from pipeline.logs import quiet
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
    #: a table's changelog: named ``<MA_APP_ID>-<name>-changelog``, without the topic prefix
    changelog: bool = False

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
DELIVERIES = TopicSpec(
    "deliveries", "trigger_id", "one record per webhook delivery attempt (ma-pipeline deliver)"
)

PUBLIC_TOPICS: tuple[TopicSpec, ...] = (
    EVENTS,
    CONTACT_UPDATES,
    CONTACTS,
    IDENTITIES,
    SCORES,
    TRIGGERS,
    DEAD_LETTER,
    DELIVERIES,
)

# -- between the worker's stages (``pipeline.worker``) ---------------------------------------
X_CONTACT_WORK = TopicSpec(
    "x.contact-work",
    "contact_id",
    "stage 1 → stage 2: resolved events and identity notices",
    public=False,
)
X_COOKIE_COMMANDS = TopicSpec(
    "x.cookie-commands",
    "anonymous_id",
    "stage 2 → stage 1: unlink commands; user_id questions and answers within stage 1",
    public=False,
)
X_ANONYMOUS_EVENTS = TopicSpec(
    "x.anonymous-events",
    "anonymous_id (server events: event_id)",
    "stage 1 → sink: resolved events without a contact",
    public=False,
)
X_DECISIONS = TopicSpec(
    "x.decisions",
    "contact_id or anonymous_id",
    "both stages → sink: triggers skipped and why, delayed ones scheduled (ClickHouse "
    "trigger_decisions, the console)",
    public=False,
)
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (
    X_CONTACT_WORK,
    X_COOKIE_COMMANDS,
    X_ANONYMOUS_EVENTS,
    X_DECISIONS,
)
CONTACT_WORK = X_CONTACT_WORK.name
COOKIE_COMMANDS = X_COOKIE_COMMANDS.name
#: stage 1 → the sink only: events with no contact (stage 2 has nothing to do with them)
ANONYMOUS_EVENTS = X_ANONYMOUS_EVENTS.name
DECISIONS = X_DECISIONS.name
#: What each stage reads (one consumer group, ``MA_APP_ID``), and what the sink reads (its own
#: group, ``<MA_APP_ID>-sink``). Topic names before ``MA_TOPIC_PREFIX``.
STITCH_INPUTS = (EVENTS.name, COOKIE_COMMANDS)
CONTACT_INPUTS = (CONTACT_WORK, CONTACT_UPDATES.name)
SINK_INPUTS = (
    CONTACT_WORK,
    ANONYMOUS_EVENTS,
    IDENTITIES.name,
    CONTACTS.name,
    SCORES.name,
    TRIGGERS.name,
    DELIVERIES.name,
    DECISIONS,
)


def _table(name: str, description: str) -> TopicSpec:
    return TopicSpec(
        name, "the table's key", description, cleanup="compact", public=False, changelog=True
    )


#: The worker's Faust tables, each changelogged (compacted) under its key's own partition.
COOKIES_TABLE = _table("cookies", "stage 1 state per anonymous_id")
CONTACTS_TABLE = _table("contacts", "stage 2 state per contact_id")
COOKIE_DUE_TABLE = _table("cookie-due", "stage 1: when each cookie's next delayed trigger is due")
CONTACT_DUE_TABLE = _table(
    "contact-due", "stage 2: when each contact's next delayed trigger is due"
)
TABLES: tuple[TopicSpec, ...] = (COOKIES_TABLE, CONTACTS_TABLE, COOKIE_DUE_TABLE, CONTACT_DUE_TABLE)


def all_topics() -> tuple[TopicSpec, ...]:
    return (*PUBLIC_TOPICS, *INTERNAL_TOPICS, *TABLES)


def co_partitioned(spec: TopicSpec) -> bool:
    """Must the topic have exactly ``MA_TOPIC_PARTITIONS`` partitions (the module docstring)?"""
    return spec.changelog or spec.name in (*STITCH_INPUTS, *CONTACT_INPUTS)


class TopicLayoutError(StartError):
    """An existing topic has another partition count than the worker's stages need."""


def topic_name(settings: Settings, spec: TopicSpec) -> str:
    """The topic's name on the broker under these settings."""
    if spec.changelog:
        return f"{settings.app_id}-{spec.name}-changelog"  # as Faust names a table's changelog
    return settings.topic(spec.name)


async def ensure_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created, once the broker
    takes writes to every partition of them (``_wait_until_served``)."""
    specs = specs or all_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=15000)
    # an unreachable broker fails start() with KafkaConnectionError, which the command reports
    # in one line (pipeline.errors): aiokafka's own error log of the same would be a second
    with quiet("aiokafka"):
        await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _check_partitions(
            admin,
            settings,
            [
                name
                for spec in specs
                if co_partitioned(spec) and (name := topic_name(settings, spec)) in existing
            ],
        )
        wanted = [
            NewTopic(
                name=topic_name(settings, spec),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=spec.config(),
            )
            for spec in specs
            if topic_name(settings, spec) not in existing
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
        await _wait_until_served(admin, settings, created)
        log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _check_partitions(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
) -> None:
    """Raise ``TopicLayoutError`` when one of the existing topics ``names`` (co-partitioned)
    does not have ``MA_TOPIC_PARTITIONS`` partitions."""
    if not names:
        return
    wanted = settings.topic_partitions
    described = await admin.describe_topics(names)
    # a topic the broker cannot describe just now (being deleted) is left to the creation
    counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    wrong = {name: n for name, n in sorted(counts.items()) if n != wanted}
    if not wrong:
        return
    by_count: dict[int, list[str]] = {}
    for name, n in wrong.items():
        by_count.setdefault(n, []).append(name)
    listed = "; ".join(
        f"{_some(group)} {'has' if len(group) == 1 else 'have'} {n}"
        for n, group in sorted(by_count.items())
    )
    found = set(wrong.values())
    fix = (
        f"set MA_TOPIC_PARTITIONS={found.pop()}"
        if len(found) == 1 and len(wrong) == len(counts)
        else f"recreate them with {wanted} partitions"
    )
    raise TopicLayoutError(
        f"topics need MA_TOPIC_PARTITIONS={wanted} partitions each, but {listed} (the "
        f"worker's stages read partition n of each together): {fix}"
    )


def _some(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


async def _wait_until_served(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str], timeout: float = 15
) -> None:
    """Wait until the broker serves every partition of the new topics ``names``, up to
    ``timeout`` (then the first writes retry, as aiokafka's producers do).

    Two steps: the controller elects the partitions' leaders (``describe_topics`` shows them),
    then each leader applies that and starts answering for its partitions. Until the second,
    a produce is refused with NotLeaderForPartition and the producer retries after a metadata
    refresh: measured on the local broker (8 Dec), the first write to each of 240 new
    partitions took 1.1 to 1.7 s with only the first step awaited, 40 to 70 ms after both,
    the second step taking 0.6 to 1.3 s. A ``ListOffsets`` answered for every partition is
    the sign of the second: it is served by the same leader, and writes nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    partitions: list[TopicPartition] = []
    while names and loop.time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            partitions = [
                TopicPartition(topic["topic"], p["partition"])
                for topic in described
                for p in topic["partitions"]
            ]
            break
        await asyncio.sleep(0.1)
    if not partitions:
        return
    # aiokafka's consumer retries a refused ListOffsets itself, every retry_backoff_ms
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        request_timeout_ms=int(timeout * 1000),
        retry_backoff_ms=20,
    )
    with quiet("aiokafka"):
        try:
            async with asyncio.timeout_at(deadline):
                await probe.start()
                await probe.end_offsets(partitions)
        except (TimeoutError, KafkaError) as exc:
            log.debug("new topics not seen served (%r): their first writes may be retried", exc)
        finally:
            await probe.stop()
