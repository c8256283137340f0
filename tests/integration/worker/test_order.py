"""CONTRACT §3 "Order": the same events give the same identities, scores and trigger ids
whatever the arrival order (partitions produced far apart, a backlog then catch-up, kill -9
mid-stream, 1, 2 and 3 workers joining and leaving).

One fixed kind of input (people with 2–3 cookies each, scores wobbling around the MQL threshold
with pricing, careers and demo-request events, delayed and count triggers, re-links), one data
set per arrival order, all in one stack; each must equal the pure stages applied in event-time
order (``tests/unit/worker/harness.py``), which is what the contract promises.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import codec, contact_id_for
from pipeline.clock import from_millis, to_millis
from pipeline.kafka import partition_for
from pipeline.rules import load_rules
from tests.conftest import REPO, free_port
from tests.integration.worker.conftest import Stack, eventually, open_stack, start_worker
from tests.unit.worker.harness import Pipeline

pytestmark = pytest.mark.integration

PARTITIONS = 4
WAIT = 6.0  # MA_ORDER_WAIT of this stack: the longest a partition may trail the others
PATHS = ["/pricing", "/pricing/enterprise", "/careers", "/products/x", "/blog/marketing/a", "/"]


def workload(seed: int, start_ms: int) -> list[dict[str, Any]]:
    """Events of 5 people with 2–3 cookies each (one cookie shared by two: a re-link), in
    event-time order 9 ms apart; every event of a cookie is on its cookie's partition."""
    rng = random.Random(seed)
    people = [f"o{i}.{seed}.{uuid.uuid4().hex[:4]}@acme.io" for i in range(5)]
    plans: list[tuple[str, list[str]]] = []
    for n, email in enumerate(people):
        for _ in range(rng.randint(2, 3)):
            plans.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)), [email]))
        if n % 2:
            plans[-1][1].append(people[(n + 1) % len(people)])  # a shared computer: re-link
    streams = []
    for aid, emails in plans:
        kinds = ["view"] * rng.randint(2, 4) + ["identify"] + ["view"] * rng.randint(2, 6)
        if len(emails) > 1:
            kinds += ["form"] + ["view"] * 2
        elif rng.random() < 0.5:
            kinds.insert(rng.randrange(len(kinds)), "demo")
        streams.append((aid, emails, kinds))
    # interleave the cookies' streams at random, keeping each cookie's own order
    order = [i for i, (_, _, kinds) in enumerate(streams) for _ in kinds]
    rng.shuffle(order)
    cursor = [0] * len(streams)
    events = []
    for n, i in enumerate(order):
        aid, emails, kinds = streams[i]
        kind = kinds[cursor[i]]
        cursor[i] += 1
        base = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "site_id": "acme",
            "received_at": from_millis(start_ms + 9 * n),
            "source": "browser",
            "anonymous_id": aid,
        }
        if kind == "identify":
            events.append({**base, "type": "identify", "email": emails[0]})
        elif kind in ("form", "demo"):
            events.append(
                {
                    **base,
                    "type": "form_submit",
                    "email": emails[-1],
                    "form_id": "demo-request" if kind == "demo" else "whitepaper",
                    "traits": {"consent_email": "on"},
                }
            )
        else:
            path = rng.choice(PATHS)
            url = f"https://www.acme.example{path}"
            events.append({**base, "type": "page_view", "url": url, "path": path})
    return events


Result = tuple[set[tuple[Any, ...]], dict[str, float], set[str]]
RULE_OF: dict[str, Any] = {}  # trigger id → the trigger, for failure messages


def summarise(
    identities: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    triggers: list[dict[str, Any]],
    subjects: set[str],
    at_ms: int,
) -> Result:
    """Identity decisions, final scores valued at ``at_ms``, trigger ids: of ``subjects`` only."""
    decisions = {
        (d["anonymous_id"], d["contact_id"], d["previous_contact_id"], d["reason"], d["event_id"])
        for d in identities
        if d["anonymous_id"] in subjects
    }
    final: dict[str, float] = {}
    for v in scores:
        subject = v["contact_id"] or v["anonymous_id"]
        if subject in subjects:
            at = to_millis(v["at"]) if not isinstance(v["at"], str) else to_millis(_iso(v["at"]))
            final[subject] = round(v["score"] * 0.5 ** ((at_ms - at) / (30 * 86_400_000)), 2)
    fired = {
        t["trigger_id"] for t in triggers if (t.get("contact_id") or t["anonymous_id"]) in subjects
    }
    RULE_OF.update({t["trigger_id"]: t for t in triggers})
    return decisions, final, fired


def _iso(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected(events: list[dict[str, Any]], subjects: set[str], until_ms: int) -> Result:
    """The pure stages, in event-time order, then every delayed trigger due by ``until_ms``."""
    pipeline = Pipeline(load_rules(REPO / "config" / "rules.yaml"))
    for event in sorted(events, key=lambda e: (e["received_at"], e["event_id"])):
        pipeline.send(event)
    pipeline.tick(until_ms)
    return summarise(
        pipeline.of("identities"),
        pipeline.of("scores"),
        pipeline.of("triggers"),
        subjects,
        until_ms,
    )


def subjects_of(events: list[dict[str, Any]]) -> set[str]:
    subjects = {e["anonymous_id"] for e in events}
    return subjects | {str(contact_id_for(e["email"])) for e in events if e.get("email")}


def by_partition(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        parts[partition_for(e["anonymous_id"].encode(), list(range(PARTITIONS)))].append(e)
    return parts


class Producer:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap, acks="all")

    async def send(self, events: list[dict[str, Any]]) -> None:
        topic = self.stack.settings.topic("events")
        for e in events:
            await self.producer.send(topic, codec.dumps(e), key=e["anonymous_id"].encode())
        await self.producer.flush()


async def test_results_follow_event_time_whatever_the_arrival_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with open_stack(kafka_bootstrap, tmp_path, order_wait=WAIT) as stack:
        producer = Producer(stack)
        await producer.producer.start()
        extra: list[Any] = []

        def another_worker(n: int) -> Any:
            settings = stack.settings.model_copy(
                update={"data_dir": stack.tmp / f"data-{n}", "worker_web_port": free_port(),
                        "sink": False}
            )  # fmt: skip
            return start_worker(settings, stack.tmp / f"worker-{n}-{uuid.uuid4().hex[:4]}.log")

        # -- the arrival orders: each gets its own events ------------------------------------
        async def backlog(events: list[dict[str, Any]]) -> None:
            await producer.send(events)

        async def partitions_apart(events: list[dict[str, Any]]) -> None:
            for part in by_partition(events):
                await producer.send(part)
                await asyncio.sleep(1.0)

        async def partitions_reversed(events: list[dict[str, Any]]) -> None:
            for part in reversed(by_partition(events)):
                await producer.send(part)
                await asyncio.sleep(0.7)

        async def one_partition_late(events: list[dict[str, Any]]) -> None:
            parts = by_partition(events)
            await producer.send([e for p in parts[1:] for e in p])
            await asyncio.sleep(3.0)
            await producer.send(parts[0])

        async def chunks_at_random(events: list[dict[str, Any]]) -> None:
            rng = random.Random(5)
            queues = by_partition(events)
            while any(queues):
                q = rng.choice([q for q in queues if q])
                n = rng.randint(1, 8)
                await producer.send(q[:n])
                del q[:n]
                await asyncio.sleep(rng.random() * 0.2)

        async def kill_9_mid_stream(events: list[dict[str, Any]]) -> None:
            half = len(events) // 2
            await producer.send(events[:half])
            await asyncio.sleep(0.3)
            await asyncio.gather(
                asyncio.to_thread(stack.restart_worker, kill=True), producer.send(events[half:])
            )

        async def second_worker_joins(events: list[dict[str, Any]]) -> None:
            half = len(events) // 2
            await producer.send(events[:half])
            extra.append(await asyncio.to_thread(another_worker, 2))
            await producer.send(events[half:])

        async def third_worker_joins(events: list[dict[str, Any]]) -> None:
            third = len(events) // 3
            await producer.send(events[:third])
            extra.append(await asyncio.to_thread(another_worker, 3))
            await producer.send(events[third:])

        async def workers_leave(events: list[dict[str, Any]]) -> None:
            half = len(events) // 2
            await producer.send(events[:half])
            while extra:
                await asyncio.to_thread(extra.pop().stop)
            await producer.send(events[half:])

        async def clean_restart_in_a_backlog(events: list[dict[str, Any]]) -> None:
            await asyncio.to_thread(stack.worker.stop)
            await producer.send(events)
            await asyncio.to_thread(stack.restart_worker, kill=False)

        orders: list[Callable[[list[dict[str, Any]]], Awaitable[None]]] = [
            backlog,
            partitions_apart,
            partitions_reversed,
            one_partition_late,
            chunks_at_random,
            kill_9_mid_stream,
            second_worker_joins,
            third_worker_joins,
            workers_leave,
            clean_restart_in_a_backlog,
        ]
        runs = []
        try:
            last = 0
            for seed, order in enumerate(orders):
                # received_at never goes back on a partition (the collector stamps it as events
                # arrive): each run starts after the one before
                events = workload(seed, max(to_millis(stack.clock.now()), last + 10))
                last = to_millis(events[-1]["received_at"])
                runs.append((order.__name__, events))
                await order(events)
                await asyncio.sleep(0.5)
            total = sum(len(events) for _, events in runs)
            await eventually(
                lambda: stack.query(
                    "SELECT 1 FROM {db}.events HAVING count() >= {n:UInt64}", n=total
                ),
                timeout=120,
            )
            # the delayed triggers of every run, due a day after its events
            stack.advance(timedelta(days=1, minutes=1))
            until = to_millis(stack.clock.now())
            await asyncio.sleep(WAIT + 2)
            await stack.quiescent()
            readers = {}
            for topic in ("identities", "scores", "triggers"):
                async with stack.reader(topic) as reader:
                    await reader.settle(3)
                readers[topic] = [v for v in reader.values if v is not None]
        finally:
            await producer.producer.stop()
            for worker in extra:
                worker.stop()
    failures = []
    for name, events in runs:
        subjects = subjects_of(events)
        want = expected(events, subjects, until)
        got = summarise(
            readers["identities"], readers["scores"], readers["triggers"], subjects, until
        )
        assert len(want[0]) >= 10 and want[2], name  # it does link, re-link and fire
        if got != want:
            scores = {k: (got[1].get(k), v) for k, v in want[1].items() if got[1].get(k) != v}
            where = {
                e["event_id"]: (
                    to_millis(e["received_at"]) - to_millis(events[0]["received_at"]),
                    partition_for(e["anonymous_id"].encode(), list(range(PARTITIONS))),
                    e["anonymous_id"][:8],
                    e.get("path") or e["type"],
                )
                for e in events
            }

            def show(ids: set[str], where: dict[str, Any] = where) -> list[Any]:
                return [
                    (RULE_OF[t]["rule"], RULE_OF[t].get("contact_id", "")[:8],
                     [where.get(c, c) for c in RULE_OF[t]["cause_event_ids"]])
                    for t in ids
                ]  # fmt: skip

            failures.append(
                f"{name}: identities {got[0] == want[0]} {sorted(got[0] ^ want[0])}, "
                f"scores (got, want) {scores}, "
                f"triggers missing {show(want[2] - got[2])}, extra {show(got[2] - want[2])}"
            )
            dump = [(*where[e["event_id"]], e.get("email"), e["event_id"][:8]) for e in events]
            failures.append("  events: " + "\n    ".join(map(str, dump)))
    (tmp_path / "failures.txt").write_text("\n".join(failures))
    differ = [f.split(":")[0] for f in failures if not f.startswith(" ")]
    assert not differ, f"{differ} of {len(runs)} orders differ: see {tmp_path}/failures.txt"
