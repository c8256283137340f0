"""CONTRACT §6 "writes are idempotent" under crashes: the worker is ``kill -9``ed while
traffic flows (page views, identifies, forms, email clicks) and its replays re-send records
(at-least-once); ClickHouse still holds every accepted event once, and every identity decision,
score change and trigger once — exactly what the topics hold, without their repeats.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline import contact_id_for
from tests.integration.worker.conftest import Stack, eventually, open_stack, page_view

pytestmark = pytest.mark.integration

PATHS = ["/pricing", "/blog/marketing/a", "/products/x", "/careers", "/blog/b", "/"]


def workload(seed: int = 11, cookies: int = 36) -> list[tuple[str, dict[str, Any]]]:
    """Deterministic actions in order: ``("send", event)`` or ``("click", {aid, contact_id})``."""
    rng = random.Random(seed)
    people = [f"x{i}.{seed}@acme.io" for i in range(12)]
    per_cookie = []
    for _ in range(cookies):
        aid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        actions: list[tuple[str, dict[str, Any]]] = []
        for _ in range(rng.randint(5, 11)):
            roll = rng.random()
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if roll < 0.1:
                actions.append(
                    (
                        "send",
                        {
                            "type": "identify",
                            "anonymous_id": aid,
                            "email": rng.choice(people),
                            "event_id": event_id,
                        },
                    )
                )
            elif roll < 0.18:
                actions.append(
                    (
                        "send",
                        {
                            "type": "form_submit",
                            "anonymous_id": aid,
                            "email": rng.choice(people),
                            "event_id": event_id,
                            "form_id": rng.choice(["demo-request", "whitepaper"]),
                        },
                    )
                )
            elif roll < 0.26:
                contact = str(contact_id_for(rng.choice(people)))
                actions.append(("click", {"aid": aid, "contact_id": contact}))
            else:
                view = {**page_view(aid, rng.choice(PATHS)), "event_id": event_id}
                actions.append(("send", view))
        per_cookie.append(actions)
    # interleave the cookies (each keeps its own order), as concurrent visitors do
    ordered = []
    while any(per_cookie):
        actions = rng.choice([a for a in per_cookie if a])
        ordered.append(actions.pop(0))
    return ordered  # fmt: skip


async def play(stack: Stack, actions: list[tuple[str, dict[str, Any]]]) -> int:
    """Send the actions through the collector in order; the number of events it accepted."""
    accepted = 0
    batch: list[dict[str, Any]] = []

    async def flush() -> None:
        nonlocal accepted
        if batch:
            accepted += (await stack.send(*batch))["accepted"]
            batch.clear()

    for kind, value in actions:
        if kind == "send":
            batch.append(value)
            if len(batch) == 20:
                await flush()
        else:
            await flush()
            campaign = f"c-{uuid.uuid4().hex[:6]}"  # one link per mail: never a scanner burst
            response = await stack.click(value["aid"], value["contact_id"], campaign=campaign)
            assert response.status == 302
            accepted += 1
    await flush()
    return accepted


async def topic_keys(stack: Stack, topic: str, key: tuple[str, ...]) -> Counter[tuple[Any, ...]]:
    """How many times each record (by ``key`` fields) is on a topic: repeats are replays."""
    async with stack.reader(topic) as reader:
        await reader.settle(2.0)
    return Counter(tuple(v[k] for k in key) for v in reader.values if v is not None)


@pytest.mark.parametrize("kills", [1, 2])
async def test_kill_9_mid_stream_stores_every_row_exactly_once(
    kafka_bootstrap: str, tmp_path: Path, kills: int
) -> None:
    actions = workload()
    part = len(actions) // (kills + 2)
    async with open_stack(kafka_bootstrap, tmp_path) as stack:
        accepted = await play(stack, actions[:part])
        # the worker is in the middle of it (and the sink still gathers its batch): kill -9,
        # while the traffic goes on; a second kill hits a worker that restarted from offsets
        # its predecessor committed
        for k in range(1, kills + 1):
            rest = actions[part * k :] if k == kills else actions[part * k : part * (k + 1)]
            _, more = await asyncio.gather(
                asyncio.to_thread(stack.restart_worker, kill=True),
                play(stack, rest),
            )
            accepted += more
        await stack.quiescent()
        await stored_exactly_once(stack, actions, accepted)


async def stored_exactly_once(
    stack: Stack, actions: list[tuple[str, dict[str, Any]]], accepted: int
) -> None:
    """ClickHouse holds every accepted event once, and each identity decision, score change
    and trigger on the topics once (their repeats are replays)."""
    sent = {v["event_id"] for kind, v in actions if kind == "send"}
    clicks = sum(1 for kind, _ in actions if kind == "click")
    assert accepted == len(sent) + clicks > 250

    async def all_events() -> bool:
        [[rows]] = await stack.query("SELECT count() FROM {db}.events")
        assert rows <= accepted, rows  # never more: a replayed event is not stored again
        return bool(rows == accepted)

    await eventually(all_events, timeout=60)
    identities = await topic_keys(
        stack, "identities", ("anonymous_id", "at", "contact_id", "reason")
    )
    triggers = await topic_keys(stack, "triggers", ("trigger_id",))
    scores = await topic_keys(
        stack, "scores", ("contact_id", "anonymous_id", "at", "rule", "event_id")
    )
    assert len(identities) > 20 and len(scores) > 100 and triggers  # a real workload

    async def everything_else() -> bool:
        [[links]] = await stack.query("SELECT count() FROM {db}.identities")
        [[fired]] = await stack.query("SELECT count() FROM {db}.triggers")
        [[changes]] = await stack.query("SELECT count() FROM {db}.score_changes")
        return (links, fired, changes) == (len(identities), len(triggers), len(scores))

    await eventually(everything_else, timeout=60)
    await asyncio.sleep(2)  # a late duplicate would land now

    [[rows, unique]] = await stack.query(
        "SELECT count(), uniqExact(event_id) FROM {db}.events")  # fmt: skip
    assert rows == unique == accepted
    stored = await stack.query("SELECT event_id FROM {db}.events WHERE type != 'email_click'")
    assert {r[0] for r in stored} == sent
    [[rows, unique]] = await stack.query(
        "SELECT count(), uniqExact(trigger_id) FROM {db}.triggers")  # fmt: skip
    assert rows == unique == len(triggers)
    [[rows, unique]] = await stack.query(
        "SELECT count(), uniqExact(anonymous_id, at, contact_id, reason) FROM {db}.identities"
    )
    assert rows == unique == len(identities)
    [[rows, unique]] = await stack.query(
        "SELECT count(), uniqExact(contact_id, anonymous_id, at, rule, event_id) "
        "FROM {db}.score_changes")  # fmt: skip
    assert rows == unique == len(scores)
