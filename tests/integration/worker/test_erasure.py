"""``ma-pipeline forget EMAIL`` end to end (CONTRACT §7): a person with cookies on two devices, a
shared computer, CRM attributes, form traits holding the email, a score and triggers is erased;
afterwards neither the email nor the contact id is in any ClickHouse row or in the latest value
of any compacted topic, the worker's state forgets them, and later traffic from their cookies
stays anonymous. Another person's data on the shared computer survives.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline import codec, contact_id_for
from pipeline.identity import normalize_email
from tests.conftest import REPO
from tests.integration.worker.conftest import Stack, eventually, new_aid, open_stack, page_view
from tests.kafka_helpers import TopicReader

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """The worker's tables in RocksDB, as in production, so that what is on disk is checked."""
    async with open_stack(
        kafka_bootstrap, tmp_path_factory.mktemp("erasure"), store="rocksdb://"
    ) as running:
        yield running


def files_holding(stack: Stack, needles: list[str]) -> list[str]:
    """Files of the data folder (the worker's RocksDB tables) and of embedded ClickHouse in
    which any needle's bytes occur; the broker's log directories are elsewhere."""
    roots = [stack.settings.data_dir, Path(stack.settings.clickhouse_url.removeprefix("chdb://"))]
    wanted = [needle.encode() for needle in needles]
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                if any(needle in content for needle in wanted):
                    found.append(str(path.relative_to(stack.tmp)))
    return sorted(found)


def event(kind: str, aid: str, email: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "anonymous_id": aid, "email": email, "event_id": str(uuid.uuid4()),
            **extra}  # fmt: skip


async def forget(stack: Stack, email: str) -> str:
    """Run ``ma-pipeline forget EMAIL`` as an operator would; the erasure id it prints."""
    env = {**os.environ, **stack.settings.as_env(), "MA_KAFKA_BOOTSTRAP": stack.settings.bootstrap}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.cli", "forget", email, "--timeout", "60", cwd=REPO,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    text = output.decode()
    assert process.returncode == 0, text
    assert "erased:" in text, text
    found = re.search(r"erasure ([0-9a-f-]{36}) requested", text)
    assert found, text
    return found.group(1)


async def rows_naming(stack: Stack, needles: list[str]) -> dict[str, int]:
    """Per table or view of the database: rows in which any needle occurs (case-insensitive)."""
    tables = await stack.query(
        "SELECT name FROM system.tables WHERE database = {d:String} ORDER BY name",
        d=stack.settings.clickhouse_database)  # fmt: skip
    assert len(tables) >= 8, tables
    found = {}
    for [table] in tables:
        [[count]] = await stack.query(
            f"SELECT count() FROM {{db}}.`{table}` "
            "WHERE multiSearchAnyCaseInsensitive(toString(tuple(*)), {n:Array(String)})",
            n=needles)  # fmt: skip
        found[table] = count
    return found


async def compacted_topics(stack: Stack) -> list[str]:
    """The stack's topics (public, internal, Faust changelogs) with ``cleanup.policy=compact``."""
    settings = stack.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics()
                 if t.startswith((settings.topic_prefix, f"{settings.app_id}-"))]  # fmt: skip
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    compacted = []
    for response in responses:
        for _error, _message, _type, name, entries, *_ in response.resources:
            policy = {entry[0]: entry[1] for entry in entries}.get("cleanup.policy", "")
            if "compact" in policy:
                compacted.append(name)
    return sorted(compacted)


async def latest_values(bootstrap: str, topic: str) -> dict[bytes | None, Any]:
    """What compaction keeps of a topic: the latest value of every key (None: a tombstone)."""
    async with TopicReader(bootstrap, topic) as reader:
        await reader.settle(1.5)
    return dict(zip(reader.keys, reader.values, strict=True))


def mentions(value: Any, needles: list[str]) -> bool:
    text = codec.dumps(value).decode().lower()
    return any(needle.lower() in text for needle in needles)


async def test_forget_erases_a_person_everywhere_and_their_cookies_stay_anonymous(
    stack: Stack,
) -> None:
    email = f"Erin.Forget.{uuid.uuid4().hex[:8]}@Acme.IO"  # as she typed it
    normal = normalize_email(email)
    erin = str(contact_id_for(email))
    frank_email = f"frank.{uuid.uuid4().hex[:8]}@acme.io"
    frank = str(contact_id_for(frank_email))
    phone, laptop, shared = new_aid(), new_aid(), new_aid()
    needles = [email, normal, erin]

    # The CRM knows her; she browses on her phone, then clicks a mail; on her laptop she asks
    # for a demo with a form that carries her email in its fields; on a shared PC that Frank used
    # first she types her email too. Score passes MQL: a sales alert fires, a trial offer waits.
    await stack.contacts(
        "crm",
        {
            "email": normal,
            "consent_email": True,
            "attributes": {"first_name": "Erin", "department": "marketing"},
        },
    )
    await stack.send(page_view(phone, "/pricing"), page_view(phone, "/blog/marketing/a"))
    assert (await stack.click(phone, erin)).status == 302
    await stack.send(
        page_view(laptop, "/products/x"),
        event("form_submit", laptop, email, form_id="demo-request",
              traits={"email": email, "work_email": normal, "title": "Marketing Manager",
                      "message": f"please call, or write to {email}"}),
    )  # fmt: skip
    franks_history = [page_view(shared, "/careers"), event("identify", shared, frank_email),
                      page_view(shared, "/blog/b")]  # fmt: skip
    await stack.send(*franks_history)
    await stack.send(event("identify", shared, email), page_view(shared, "/pricing"))

    async def everything_landed() -> bool:
        [[events]] = await stack.query(
            "SELECT count() FROM {db}.events WHERE anonymous_id IN {a:Array(String)}",
            a=[phone, laptop, shared])  # fmt: skip
        alerts = await stack.query(
            "SELECT 1 FROM {db}.triggers WHERE contact_id = {c:String} "
            "AND rule = 'mql-sales-alert'", c=erin)  # fmt: skip
        titled = await stack.query(
            "SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String} "
            "AND attributes['title'] != ''", c=erin)  # fmt: skip
        [[links]] = await stack.query(
            "SELECT count() FROM {db}.identities WHERE anonymous_id IN {a:Array(String)}",
            a=[phone, laptop, shared])  # fmt: skip
        return bool(events == 10 and alerts and titled and links == 4)

    await eventually(everything_landed, timeout=60)
    await stack.quiescent()
    before = await rows_naming(stack, needles)
    for table in ("events", "identities", "contact_versions", "contacts", "score_changes",
                  "score_state", "scores", "triggers", "contact_events"):  # fmt: skip
        assert before[table] > 0, (table, before)  # the scan does find her where she is
    frank_before = await stack.query(
        "SELECT event_id FROM {db}.contact_events WHERE contact_id = {c:String} ORDER BY event_id",
        c=frank)  # fmt: skip
    assert sorted(r[0] for r in frank_before) == sorted(e["event_id"] for e in franks_history)

    on_disk = await asyncio.to_thread(files_holding, stack, [email, normal])
    assert any("worker-ch" in path for path in on_disk), on_disk  # the scan does find her bytes

    erasure_id = await forget(stack, email)

    # ClickHouse: no row anywhere names her, by email (any case) or by contact id
    assert await rows_naming(stack, needles) == dict.fromkeys(before, 0)
    [[hash_, deleted]] = await stack.query(
        "SELECT contact_hash, rows_deleted FROM {db}.erasures WHERE erasure_id = {e:String}",
        e=erasure_id)  # fmt: skip
    assert deleted > 0 and len(hash_) == 64
    # Frank's history on the shared PC, from before Erin typed her email there, is his still
    frank_after = await stack.query(
        "SELECT event_id FROM {db}.contact_events WHERE contact_id = {c:String} ORDER BY event_id",
        c=frank)  # fmt: skip
    assert frank_after == frank_before
    assert await stack.query("SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String}", c=frank)

    # Compacted topics: her keys end in a tombstone, no key's latest value names her
    compacted = await compacted_topics(stack)
    contacts_topic = stack.settings.topic("contacts")
    changelog = f"{stack.settings.app_id}-contacts-changelog"
    assert {contacts_topic, changelog} <= set(compacted), compacted

    async def tombstoned() -> bool:
        for topic in compacted:
            latest = await latest_values(stack.settings.bootstrap, topic)
            if topic in (contacts_topic, changelog):
                assert erin.encode() in latest, topic  # she was there
            for key, value in latest.items():
                if key is not None and erin.encode() in key:
                    assert value is None, (topic, key, value)
                elif value is not None:
                    assert not mentions(value, needles), (topic, key, value)
        return True

    await eventually(tombstoned, timeout=20, every=1)

    # The worker's state: her cookies are nobody's now, and stay so
    for aid in (phone, laptop, shared):
        response = await stack.http.get(f"{stack.url}/v1/profile", params={"aid": aid})
        assert response.status == 200
        assert (await response.json())["identified"] is False, aid
    later = [page_view(phone, "/pricing"), page_view(laptop, "/products/x"),
             page_view(shared, "/blog/marketing/b")]  # fmt: skip
    await stack.send(*later)
    stack.advance(timedelta(days=1, seconds=5))  # her trial offer was due by now
    rows = await eventually(lambda: stack.query(
        "SELECT contact_id, pre_identification FROM {db}.events "
        "WHERE event_id IN {e:Array(String)}",
        e=[e["event_id"] for e in later]), timeout=30)  # fmt: skip
    assert len(rows) == 3 and all(r == ["", 0] for r in rows), rows
    await asyncio.sleep(3)  # the due-trigger timer runs every 0.25 s
    await stack.quiescent()
    assert await rows_naming(stack, needles) == dict.fromkeys(before, 0)
    async with stack.reader("identities") as reader:
        await reader.settle(1.0)
    links = sorted((v["anonymous_id"], v["contact_id"]) for v in reader.values
                   if v["anonymous_id"] in (phone, laptop, shared))  # fmt: skip
    assert links == sorted([(phone, erin), (laptop, erin), (shared, frank), (shared, erin)])
    async with stack.reader("triggers") as reader:
        await reader.settle(1.0)
    assert [t["rule"] for t in reader.values if t.get("contact_id") == erin] == ["mql-sales-alert"]

    # On disk: her state's files were rewritten (RocksDB compaction), and so were the
    # ClickHouse parts that held her rows (mutations); the parts they replaced are gone too
    # (embedded chDB: the erasure clears them, ``writer._purge_outdated``)
    assert await asyncio.to_thread(files_holding, stack, [email, normal]) == []
