"""End-to-end latency: a browser's ``POST /v1/batch`` to the decision on ``ma.identities`` or
``ma.triggers``, through a real collector and a real worker (each in its own process).

Traffic at a steady ``RATE`` events/s for 20 s (after a warm-up), then at ``HIGH_RATE`` (about
half of what one worker process takes, ``bench.worker``), at 80% of that (``load_rate``), at
``LOW_RATE`` (the path's own cost, where no backlog can build up), and last at ``SCALED_RATE``
(the issue's 5k events/s) with ``SCALED_WORKERS`` worker processes in the group (the first
keeps the sink, the others run with ``MA_SINK=false``); three kinds of requests in turn, each
from a new browser:

- ``identify``: one ``identify`` with an email → the cookie's link on ``ma.identities``
  (stage 1 of the worker);
- ``web``: three views of ``/blog/marketing/data-driven-marketing`` → the anonymous
  ``whitepaper-form-prompt`` trigger on ``ma.triggers`` (stage 1);
- ``sales``: a demo-request form and a ``trial_signup`` (40 + 30 points) → the
  ``mql-sales-alert`` trigger for the new contact (stage 1, then stage 2 by contact).

Latency = from just before the POST until this process reads the record (a consumer assigned
to every partition); ``latency.collector`` is the share up to the event on ``ma.events``; the
sales rows also give the worker's two stages apart, from record timestamps (the events on
``ma.events`` → their hand-over on ``x.contact-work`` → the trigger): stage 2 holds a
contact's records until every partition has passed them, up to ``MA_ORDER_WAIT``. A
latency has no natural baseline: the baseline row is the bare round trip on the same broker at
the same rate, aiokafka ``send()`` (``acks=all``, idempotent, linger 2 ms, as the collector's
producer) to a consumer reading it, measured with both processes running.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import BenchContext, Section, section
from bench.procs import Child, free_port, worker_settings
from pipeline.settings import Settings
from pipeline.topics import CONTACT_WORK, TopicSpec, all_topics, ensure_topics
from pipeline.worker.handover import hand_overs

SITE = "acme"
WRITE_KEY = "wk_acme_public_7d1f3a"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36"
RATE = 200  # events/s
#: a heavier load, about half of one worker process's throughput
HIGH_RATE = 1_000
#: 80% of the rate one worker process sustains: of ``worker.events`` when the same run measured
#: it (``load_rate``), else this (80% of its 2,606 events/s on 7 Dec)
LOAD_RATE = 2_000
#: a lighter load: what the path costs when no backlog can build up
LOW_RATE = 50
#: the issue's rate for latency at load, with this many worker processes (the last phase)
SCALED_RATE = 5_000
SCALED_WORKERS = 2
ROUNDTRIP = TopicSpec("bench-roundtrip", "none", "bare round-trip latency", public=False)
KINDS = ("identify", "web", "sales")
#: the collector's part: the request's first event on ``ma.events``
ACCEPTED = "accepted"
#: which record answers which kind of request
ANSWERS = {"identify": "identities", "web": "whitepaper-form-prompt", "sales": "mql-sales-alert"}


@dataclass
class Sent:
    """Requests sent: event_id → (kind, request number), and when each request was sent."""

    kinds: dict[str, tuple[str, int]] = field(default_factory=dict)
    at: dict[int, float] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in (*KINDS, ACCEPTED)}
    )
    answered: set[int] = field(default_factory=set)
    accepted: set[int] = field(default_factory=set)
    #: per ``sales`` request: when (record timestamps, ms) its events reached ``ma.events``,
    #: stage 1 handed the last of them over on ``x.contact-work``, and stage 2 fired
    stages: dict[int, dict[str, int]] = field(default_factory=dict)
    errors: int = 0
    measuring: bool = False

    def expected(self, kind: str) -> int:
        return sum(1 for n in self.at if n % len(KINDS) == KINDS.index(kind))


def _request(kind: str, n: int, salt: str) -> list[dict[str, Any]]:
    aid = str(uuid.uuid4())
    page = "https://www.acme.example/blog/marketing/data-driven-marketing"
    email = f"lat{n}.{salt}@globex.io"

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "type": kind, "anonymous_id": aid, **fields}

    if kind == "identify":
        return [event("identify", email=email, traits={"first_name": "Ana"})]
    if kind == "web":
        return [event("page_view", url=page, title="Data-driven marketing") for _ in range(3)]
    return [
        event(
            "form_submit",
            email=email,
            form_id="demo-request",
            url="https://www.acme.example/demo",
            traits={"title": "CTO"},
        ),
        event("custom", name="trial_signup", url="https://www.acme.example/signup"),
    ]


async def _send(http: aiohttp.ClientSession, url: str, body: bytes, sent: Sent) -> None:
    try:
        async with http.post(url, data=body, headers={"User-Agent": BROWSER_UA}) as response:
            answer = await response.read()
            if response.status != 200 or orjson.loads(answer)["rejected"]:
                sent.errors += 1
    except aiohttp.ClientError:
        sent.errors += 1


async def _traffic(url: str, sent: Sent, rate: int, seconds: float, first: int, salt: str) -> int:
    """POST requests so that events flow at ``rate`` per second for ``seconds``; return the
    next request number."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time()
    due = 0.0
    n = first
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        while due < seconds:
            kind = KINDS[n % len(KINDS)]
            events = _request(kind, n, salt)
            body = orjson.dumps({"site_id": SITE, "write_key": WRITE_KEY, "events": events})
            await asyncio.sleep(max(start + due - loop.time(), 0))
            for event in events:
                sent.kinds[event["event_id"]] = (kind, n)
            sent.at[n] = time.perf_counter()
            task = asyncio.create_task(_send(http, url, body, sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += len(events) / rate
            n += 1
        if tasks:
            await asyncio.gather(*tasks)
    return n


async def _listen(settings: Settings, sent: Sent, stop: asyncio.Event) -> None:
    """Read ``ma.identities``, ``ma.triggers`` and ``ma.events`` from the start; record each
    answer's latency (and each request's arrival on ``ma.events``)."""
    topics = [settings.topic("identities"), settings.topic("triggers"), settings.topic("events")]
    topics.append(settings.topic(CONTACT_WORK))  # where the sales path's stage 1 ends
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        )
        await consumer.seek_to_beginning()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    value: dict[str, Any] = orjson.loads(record.value) if record.value else {}
                    if tp.topic == topics[3]:
                        if sent.measuring:
                            _handed_over(sent, value, record.timestamp)
                        continue
                    if tp.topic == topics[2]:
                        kind, n = sent.kinds.get(str(value.get("event_id")), ("", -1))
                        if kind == "sales" and sent.measuring:
                            _stamp(sent, n, "event", record.timestamp)
                        if n >= 0 and n not in sent.accepted:
                            sent.accepted.add(n)
                            if sent.measuring:
                                sent.latencies[ACCEPTED].append(now - sent.at[n])
                        continue
                    if tp.topic == topics[0]:
                        answer, ids = "identities", [str(value.get("event_id"))]
                    else:
                        answer = str(value.get("rule"))
                        ids = [str(i) for i in value.get("cause_event_ids") or []]
                    for event_id in ids:
                        kind, n = sent.kinds.get(event_id, ("", -1))
                        if n >= 0 and ANSWERS[kind] == answer and n not in sent.answered:
                            sent.answered.add(n)
                            if sent.measuring:
                                sent.latencies[kind].append(now - sent.at[n])
                                if kind == "sales":
                                    _stamp(sent, n, "answer", record.timestamp)
                            break
    finally:
        await consumer.stop()


def _stamp(sent: Sent, n: int, stage: str, at: int) -> None:
    """Keep the latest timestamp of ``stage`` for request ``n``."""
    stamps = sent.stages.setdefault(n, {})
    stamps[stage] = max(stamps.get(stage, at), at)


def _handed_over(sent: Sent, value: dict[str, Any], at: int) -> None:
    """Stamp the sales requests whose events this ``x.contact-work`` envelope hands over."""
    for _, message in hand_overs(value) or ():
        if isinstance(message, dict) and message.get("k") == "event":
            kind, n = sent.kinds.get(str(message["e"].get("event_id")), ("", -1))
            if kind == "sales":
                _stamp(sent, n, "handover", at)


def _stage_shares(sent: Sent) -> dict[str, float]:
    """p50 and p99 (ms) of the sales path's two worker stages, from record timestamps: stage 1
    from the events on ``ma.events`` to their hand-over, stage 2 from it to the trigger."""
    shares: dict[str, list[float]] = {"stage1": [], "stage2": []}
    for stamps in sent.stages.values():
        if {"event", "handover", "answer"} <= stamps.keys():  # timestamps in ms
            shares["stage1"].append((stamps["handover"] - stamps["event"]) / 1000)
            shares["stage2"].append((stamps["answer"] - stamps["handover"]) / 1000)
    if len(shares["stage1"]) < 2:
        return {}
    figures: dict[str, float] = {}
    for stage, values in shares.items():
        cuts = _percentiles(values)
        figures[f"{stage}_p50_ms"] = cuts["p50_ms"]
        figures[f"{stage}_p99_ms"] = cuts["p99_ms"]
    return figures


async def _roundtrip(settings: Settings, seconds: float) -> list[float]:
    """Bare aiokafka produce → consume latencies at ``RATE`` messages/s (after 1 s warm-up)."""
    topic = settings.topic(ROUNDTRIP.name)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await producer.start()
    await consumer.start()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def listen() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    n = int(record.value or b"-1")
                    if n in sent_at:
                        latencies.append(now - sent_at.pop(n))

    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.topic_partitions)])
        await consumer.seek_to_end()
        listener = asyncio.create_task(listen())
        loop = asyncio.get_running_loop()
        start = loop.time()
        warmup = RATE  # one second
        for n in range(int((seconds + 1) * RATE)):
            await asyncio.sleep(max(start + n / RATE - loop.time(), 0))
            if n >= warmup:
                sent_at[n] = time.perf_counter()
            await producer.send(topic, str(n).encode(), key=str(uuid.uuid4()).encode())
        await producer.flush()
        deadline = loop.time() + 10
        while sent_at and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await listener
    finally:
        await consumer.stop()
        await producer.stop()
    return latencies


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    if len(ms) < 2:
        raise RuntimeError(f"only {len(ms)} latencies measured")
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    third = max(len(latencies) // 3, 1)  # in arrival order: does a backlog build up?
    trend = {
        "p50_first_third_ms": round(statistics.median(latencies[:third]) * 1000, 1),
        "p50_last_third_ms": round(statistics.median(latencies[-third:]) * 1000, 1),
    }
    return {
        **trend,
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(ms[-1], 1),
        "samples": len(ms),
    }


@section("latency")
async def latency(ctx: BenchContext, out: Section) -> None:
    """POST /v1/batch → ma.identities / ma.triggers latency, real collector and worker."""
    seconds = 5.0 if ctx.quick else 20.0
    settings = worker_settings(ctx, "latency", http_port=free_port())
    import pipeline.worker.app  # noqa: F401 - registers the worker's internal topics

    ctx.created_topics += await ensure_topics(settings, (*all_topics(), ROUNDTRIP))
    worker = Child.start(ctx, ["-m", "pipeline.cli", "worker"], settings, "latency-worker")
    workers = [worker]
    collector = Child.start(
        ctx, ["-m", "bench.run_collector", "collector"], settings, "latency-collector"
    )
    try:
        await collector.wait_for("listening on", timeout=60)
        await worker.wait_for("worker ready", timeout=120)
        ctx.log(f"bare round trip at {RATE} msgs/s for {seconds:.0f} s …")
        base = _percentiles(await _roundtrip(settings, seconds))
        out.add(
            "latency.kafka_roundtrip",
            base["p50_ms"],
            "ms p50",
            extra=base,
            note=f"aiokafka send() → consumer, {RATE} msgs/s; p95 {base['p95_ms']} ms, "
            f"p99 {base['p99_ms']} ms",
        )

        sent = Sent()
        stop = asyncio.Event()
        listener = asyncio.create_task(_listen(settings, sent, stop))
        url = f"http://127.0.0.1:{settings.http_port}/v1/batch"
        salt = uuid.uuid4().hex[:6]
        ctx.log(f"warm-up: {RATE} events/s for 3 s …")
        n = await _traffic(url, sent, RATE, 3.0, 0, salt)
        await _wait_answered(sent, n, 30)

        async def phase(rate: int, prefix: str) -> None:
            nonlocal n
            ctx.log(f"measuring: {rate} events/s for {seconds:.0f} s …")
            sent.latencies = {k: [] for k in (*KINDS, ACCEPTED)}
            sent.stages = {}
            sent.measuring = True

            def used() -> dict[str, float]:
                return {
                    "worker": sum(each.cpu_seconds() for each in workers),
                    "collector": collector.cpu_seconds(),
                }

            cpu0 = used()
            first = n
            started = time.perf_counter()
            n = await _traffic(url, sent, rate, seconds, first, salt)
            elapsed = time.perf_counter() - started
            cpu = {name: (seconds_ - cpu0[name]) / elapsed for name, seconds_ in used().items()}
            sizes = [len(_request(kind, 0, salt)) for kind in KINDS]
            sent_rate = sum(sizes[m % len(KINDS)] for m in range(first, n)) / elapsed
            missing = await _wait_answered(sent, n, 60)
            sent.measuring = False
            if sent.errors:
                raise RuntimeError(f"{sent.errors} requests failed: see {collector.log}")
            missed = [m for m in missing if m >= first]
            _report(
                ctx, out, sent, prefix, rate, seconds, cpu, missed, settings.order_wait,
                workers=len(workers), sent_rate=sent_rate,
            )  # fmt: skip

        for rate, prefix in (
            (RATE, "latency"),
            (HIGH_RATE, "latency.high"),
            (load_rate(ctx), "latency.load"),
            (LOW_RATE, "latency.low"),
        ):
            await phase(rate, prefix)
        await _profile_latency(ctx, out, settings, salt)
        # the rate, with more worker processes: the first keeps the sink, the others
        # run the two stages only (``MA_SINK=false``), in the same group
        for i in range(1, SCALED_WORKERS):
            more = settings.model_copy(
                update={
                    "sink": False,
                    "data_dir": ctx.scratch / f"latency-{i + 1}" / "data",
                    "clickhouse_url": f"chdb://{ctx.scratch / f'latency-{i + 1}' / 'chdb'}",
                    "worker_web_port": free_port(),
                }
            )
            name = f"latency-worker{i + 1}"
            workers.append(Child.start(ctx, ["-m", "pipeline.cli", "worker"], more, name))
        for each in workers[1:]:
            await each.wait_for("worker ready", timeout=120)
        ctx.log(f"{len(workers)} workers: warm-up at {RATE} events/s for 3 s …")
        n = await _traffic(url, sent, RATE, 3.0, n, salt)
        await _wait_answered(sent, n, 60)
        await phase(SCALED_RATE, "latency.scaled")
        stop.set()
        await listener
    finally:
        collector.stop()
        for each in workers:
            each.stop()


def load_rate(ctx: BenchContext) -> int:
    """80% of ``worker.events`` measured in this run (to 10 events/s), else ``LOAD_RATE``."""
    measured = ctx.results.find("worker.events")
    if measured is None or not measured.value:
        return LOAD_RATE
    return max(10, round(0.8 * measured.value / 10) * 10)


PROFILE_COOKIES = 20
PROFILE_ROUNDS = 25


async def _profile_latency(ctx: BenchContext, out: Section, settings: Settings, salt: str) -> None:
    """``GET /v1/profile?aid=`` through the collector (which asks the worker's state), one
    request at a time, for cookies with an active web trigger. Goal: under 10 ms."""
    base = f"http://127.0.0.1:{settings.http_port}"
    aids = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for n in range(PROFILE_COOKIES):
            events = _request("web", n, salt)
            aids.append(events[0]["anonymous_id"])
            body = orjson.dumps({"site_id": SITE, "write_key": WRITE_KEY, "events": events})
            headers = {"User-Agent": BROWSER_UA}
            async with http.post(f"{base}/v1/batch", data=body, headers=headers) as response:
                response.raise_for_status()
        deadline = time.perf_counter() + 30
        while True:  # until the last cookie's web trigger shows in its profile
            async with http.get(f"{base}/v1/profile", params={"aid": aids[-1]}) as response:
                if (await response.json())["web_triggers"]:
                    break
            if time.perf_counter() > deadline:
                raise RuntimeError("no web trigger in /v1/profile within 30 s")
            await asyncio.sleep(0.2)
        ctx.log(f"/v1/profile: {PROFILE_COOKIES * PROFILE_ROUNDS} requests, one at a time …")
        latencies, with_trigger = [], 0
        for _ in range(PROFILE_ROUNDS):
            for aid in aids:
                started = time.perf_counter()
                async with http.get(f"{base}/v1/profile", params={"aid": aid}) as response:
                    view = await response.json()
                latencies.append(time.perf_counter() - started)
                with_trigger += bool(view["web_triggers"])
    figures = _percentiles(latencies)
    out.add(
        "latency.profile",
        figures["p50_ms"],
        "ms p50",
        extra=figures,
        note=f"GET /v1/profile?aid= via collector → worker state, sequential, "
        f"{len(latencies)} requests ({with_trigger} with an active web trigger); "
        f"p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms; goal < 10 ms",
    )


LABELS = {
    "identify": ("identity", "identify → link on ma.identities"),
    "web": ("trigger_web", "3 page views → anonymous web trigger"),
    "sales": ("trigger_sales", "form + signup → mql-sales-alert via stage 2"),
}


def _report(
    ctx: BenchContext,
    out: Section,
    sent: Sent,
    prefix: str,
    rate: int,
    seconds: float,
    cpu: dict[str, float],
    missing: list[int],
    order_wait: float,
    *,
    workers: int = 1,
    sent_rate: float,
) -> None:
    """Add a phase's rows; ``sent_rate``: the events/s the load generator really sent (it
    shares the machine: it may fall short of the ``rate`` it aims at)."""
    processes = "worker" if workers == 1 else f"{workers} workers"
    short = f" (sent {sent_rate:,.0f} events/s)" if sent_rate < 0.95 * rate else ""
    load = (
        f"{rate} events/s for {seconds:.0f} s{short}; {processes} {cpu['worker']:.2f} CPU, "
        f"collector {cpu['collector']:.2f} CPU"
    )
    accepted = _percentiles(sent.latencies[ACCEPTED])
    out.add(
        f"{prefix}.collector",
        accepted["p50_ms"],
        "ms p50",
        baseline="latency.kafka_roundtrip",
        extra=accepted,
        note=f"POST → its first event read from ma.events (the collector's share); "
        f"p95 {accepted['p95_ms']} ms, p99 {accepted['p99_ms']} ms; {load}",
    )
    for kind in KINDS:
        label, what = LABELS[kind]
        figures = _percentiles(sent.latencies[kind])
        lost = sum(1 for m in missing if KINDS[m % len(KINDS)] == kind)
        figures["unanswered"] = lost
        stages = ""
        if kind == "sales" and (shares := _stage_shares(sent)):
            figures.update(shares)
            stages = (
                f"; stage 1 p50 {shares['stage1_p50_ms']:.0f} / p99 "
                f"{shares['stage1_p99_ms']:.0f} ms, stage 2 (which waits up to "
                f"MA_ORDER_WAIT {order_wait:g} s for every partition) p50 "
                f"{shares['stage2_p50_ms']:.0f} / p99 {shares['stage2_p99_ms']:.0f} ms"
            )
        trend = ""
        if figures["p50_last_third_ms"] > 2 * figures["p50_first_third_ms"] + 50:
            trend = (
                f"; a backlog grew: p50 {figures['p50_first_third_ms']:.0f} ms in the first "
                f"third, {figures['p50_last_third_ms']:.0f} ms in the last"
            )
        out.add(
            f"{prefix}.{label}",
            figures["p50_ms"],
            "ms p50",
            baseline="latency.kafka_roundtrip",
            note=f"{what}; p95 {figures['p95_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
            f"{figures['samples']} samples{f', {lost} unanswered' if lost else ''}{stages}{trend}; "
            f"{load}",
            extra={
                **figures,
                "worker_cpu": round(cpu["worker"], 2),
                "collector_cpu": round(cpu["collector"], 2),
                "rate": rate,
                "sent_rate": round(sent_rate),
                "workers": workers,
            },
        )
        ctx.log(
            f"{prefix}.{label}: p50 {figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} "
            f"ms, p99 {figures['p99_ms']:.0f} ms ({figures['samples']} samples)"
        )


async def _wait_answered(sent: Sent, until: int, timeout: float) -> list[int]:
    """Wait until requests ``< until`` are answered; return those still unanswered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [n for n in range(until) if n not in sent.answered]
        if not missing:
            return []
        await asyncio.sleep(0.1)
    return [n for n in range(until) if n not in sent.answered]
