"""The real Faust worker over a backlog of ``ma.events``, next to a bare aiokafka loop.

Per run, ``N`` realistic ``ma.events`` values (``bench.traffic.worker_events``: browsing
sessions, identifies, form submits, re-links) are produced to a fresh topic prefix. Then, in
turn (the order alternates run by run):

- the bare loop (``bench.run_bare_loop``, its own process): consume, decode, add a field,
  encode, produce to another topic, wait for the acknowledgements, commit;
- the real worker (``python -m pipeline.cli worker``, its own process, a fresh consumer group,
  RocksDB tables and chDB path of its own): stitching, scoring, triggers, contacts and the
  ClickHouse sink;
- the same worker with ``MA_SINK=false`` (stitching, scoring, triggers, contacts: what the
  worker does besides writing ClickHouse), over the same events under a prefix of its own;
- the same worker with ``MA_SINK=false`` beside ``ma-pipeline sink`` (its own process), over
  the same events under a third prefix: the worker with its sink in another process.

Each is timed from the moment it is ready (partitions assigned: ``bare loop ready`` /
``worker ready``) until its consumer groups (Faust's and the sink's) have committed every topic
they read: for the worker that is ``events`` and the topics between its stages and to its sink,
so "done" means every output was produced and acknowledged and every row was written to
ClickHouse (the worker commits an input only after its outputs are durable). Start-up (topic
creation, migrations, the group join, table recovery) is reported separately, not in the rate.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import BenchContext, Measurement, Section, section
from bench.procs import Child, free_port, worker_settings
from bench.report import CpuMeter
from bench.traffic import worker_events
from pipeline.lag import group_lag, sink_group, worker_groups
from pipeline.settings import Settings
from pipeline.topics import EVENTS, SINK_INPUTS, TopicSpec, all_topics, ensure_topics

BARE_OUT = TopicSpec("bench-bare-out", "anonymous_id", "bare loop output", public=False)
POLL = 0.1


@dataclass
class Run:
    seconds: float  # ready → everything committed
    startup: float  # process start → ready
    cpu: float  # CPUs the process used while processing
    #: Faust's "producer buffer full" warnings: sends waited for its buffer to drain
    buffer_full: int = 0
    #: share of the machine's CPU time the hypervisor took while processing (``CpuMeter``)
    steal: float | None = None


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _drain(
    child: Child,
    ready: str,
    groups: dict[str, list[str]],
    settings: Settings,
    timeout: float,
    beside: Child | None = None,
) -> Run:
    """Wait until ``child`` logs ``ready`` (and ``beside``, a sink, "sink consuming"), then
    until each group has committed its topics."""
    started = time.perf_counter()
    await child.wait_for(ready, timeout=120)
    if beside is not None:
        await beside.wait_for("sink consuming", timeout=120)
    ready_at = time.perf_counter()
    children = [child] if beside is None else [child, beside]

    def cpu() -> float:
        return sum(c.cpu_seconds() for c in children)

    cpu0 = cpu()
    stolen = CpuMeter()
    stolen.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    await admin.start()
    await consumer.start()
    try:

        async def lag() -> int:
            return sum(
                [
                    sum((await group_lag(admin, consumer, group, topics)).values())
                    for group, topics in groups.items()
                ]
            )

        while (left := await lag()) > 0:
            for each in children:
                if each.popen.poll() is not None:
                    raise RuntimeError(f"{each.log.stem} exited:\n{each.text()[-3000:]}")
            if time.perf_counter() - ready_at > timeout:
                raise RuntimeError(
                    f"{child.log.stem}: {left} records not committed after {timeout:.0f} s:\n"
                    f"{child.text()[-3000:]}"
                )
            await asyncio.sleep(POLL)
        done = time.perf_counter()
    finally:
        await consumer.stop()
        await admin.close()
    seconds = done - ready_at
    stolen.stop()
    return Run(seconds, ready_at - started, (cpu() - cpu0) / seconds, steal=stolen.steal)


async def _end_offsets(settings: Settings, topics: list[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    totals: dict[str, int] = {}
    for tp, end in ends.items():
        totals[tp.topic] = totals.get(tp.topic, 0) + end
    return totals


def _worker_settings(ctx: BenchContext, run: int) -> Settings:
    return worker_settings(ctx, f"worker{run + 1}")  # the warm-up is worker0


@section("worker")
async def worker(ctx: BenchContext, out: Section) -> None:
    """The real Faust worker (stitch, score, trigger, sink) vs a bare aiokafka consume→produce."""
    # importing the app registers the internal topics between the worker's stages
    import pipeline.worker.app  # noqa: F401

    # enough events that the final flush (the sink's 1 s batch window, Faust's 0.5 s commit
    # interval) does not dominate the time
    n = ctx.scale(30_000, 3_000)
    timeout = 300.0 if not ctx.quick else 120.0
    runs: dict[str, list[Run]] = {"bare": [], "worker": [], "stitch": [], "apart": []}
    outputs: dict[str, int] = {}
    for i in range(-1, 3):  # a warm-up, then three runs
        settings = _worker_settings(ctx, i)
        # the worker without its sink reads the same events under a prefix of its own: its
        # outputs must not reach the other worker's stage 2 or sink
        no_sink = worker_settings(ctx, f"stitch{i + 1}", sink=False)
        # ... and with its sink in a process of its own, under a third prefix
        apart = worker_settings(ctx, f"apart{i + 1}", sink=False, sink_web_port=free_port())
        messages = [
            (e["anonymous_id"].encode(), orjson.dumps(e))
            for e in worker_events(n if i >= 0 else n // 4, seed=200 + i)
        ]
        for each in (settings, no_sink, apart):
            ctx.created_topics += await ensure_topics(each, (*all_topics(), BARE_OUT))
            await _produce(each.bootstrap, each.topic(EVENTS.name), messages)
        events_topic = settings.topic(EVENTS.name)
        ctx.log(f"run {i}: {len(messages):,} events on {events_topic} and {no_sink.topic_prefix}")
        modes = ("bare", "worker", "stitch", "apart")
        order = modes[i % 4 :] + modes[: i % 4]  # each goes first in turn
        for mode in order:
            if mode == "bare":
                group = f"{settings.app_id}-bare"
                child = Child.start(
                    ctx,
                    [
                        "-m",
                        "bench.run_bare_loop",
                        events_topic,
                        settings.topic(BARE_OUT.name),
                        group,
                    ],
                    settings,
                    f"bare-loop{i + 1}",
                )
                ready, groups = "bare loop ready", {group: [events_topic]}
            else:
                each = {"worker": settings, "stitch": no_sink, "apart": apart}[mode]
                child = Child.start(ctx, ["-m", "pipeline.cli", "worker"], each, f"{mode}{i + 1}")
                ready = "worker ready"
                groups = worker_groups(each)  # Faust's group, the app id; the sink's if any
            sink = None
            if mode == "apart":
                sink = Child.start(ctx, ["-m", "pipeline.cli", "sink"], apart, f"sink{i + 1}")
                groups[sink_group(apart)] = [apart.topic(t) for t in SINK_INPUTS]
            try:
                run = await _drain(child, ready, groups, settings, timeout, beside=sink)
                run.buffer_full = child.text().count("producer buffer full")
            finally:
                child.stop()
                if sink is not None:
                    sink.stop()
            steal = "?" if run.steal is None else f"{run.steal:.1%}"
            ctx.log(
                f"  {mode}: {len(messages) / run.seconds:,.0f} events/s "
                f"({run.seconds:.1f} s, start-up {run.startup:.1f} s, {run.cpu:.2f} CPU, "
                f"steal {steal})"
            )
            if i >= 0:
                runs[mode].append(run)
        if i >= 0:
            outputs = await _end_offsets(
                settings,
                [settings.topic(t) for t in ("identities", "scores", "triggers", "dead-letter")],
            )
            if outputs.get(settings.topic("dead-letter")):
                raise RuntimeError(
                    f"the worker dead-lettered {outputs[settings.topic('dead-letter')]} of "
                    f"{n} events: see {ctx.scratch / 'logs'}"
                )
            if not outputs.get(settings.topic("identities")):
                raise RuntimeError("the worker produced no identities: it did not process events")

    def summary(mode: str) -> tuple[Measurement, dict[str, Any]]:
        rates = Measurement([n / r.seconds for r in runs[mode]])
        extra = {
            "startup_s": round(statistics.median(r.startup for r in runs[mode]), 2),
            "cpu": round(statistics.median(r.cpu for r in runs[mode]), 2),
            "seconds": round(statistics.median(r.seconds for r in runs[mode]), 2),
            "producer_buffer_full": statistics.median(r.buffer_full for r in runs[mode]),
            # per sample, in the order of ``samples``: a slow sample with a high steal was
            # slowed by the host, not by the code
            "steal_per_run": [r.steal for r in runs[mode]],
        }
        extra["per_core"] = round(rates.median / max(extra["cpu"], 0.01))
        return rates, extra

    bare, bare_extra = summary("bare")
    out.add(
        "worker.bare_loop",
        bare,
        "events/s",
        note=f"bare aiokafka getmany → orjson → send() → commit, own process, {n:,} events; "
        f"{bare_extra['cpu']:.2f} CPU; ready in {bare_extra['startup_s']:.1f} s (excluded)",
        extra=bare_extra,
    )
    real, real_extra = summary("worker")
    per_run = {t.rsplit(".", 1)[-1]: v for t, v in outputs.items()}
    out.add(
        "worker.events",
        real,
        "events/s",
        baseline="worker.bare_loop",
        note=f"ma-pipeline worker (rocksdb tables, chDB sink), {n:,} events → "
        f"{per_run.get('identities', 0):,} identities, {per_run.get('scores', 0):,} scores, "
        f"{per_run.get('triggers', 0):,} triggers; {real_extra['cpu']:.2f} CPU = "
        f"{real_extra['per_core']:,} events/s per core; "
        f"start-up {real_extra['startup_s']:.1f} s (excluded); "
        f"{real_extra['producer_buffer_full']:.0f} 'producer buffer full' warnings per run",
        extra={**real_extra, "outputs_last_run": per_run},
    )
    stitch, stitch_extra = summary("stitch")
    out.add(
        "worker.stitch_score",
        stitch,
        "events/s",
        baseline="worker.bare_loop",
        note=f"the same worker with MA_SINK=false (stitching, scoring, triggers, contacts; no "
        f"ClickHouse), {n:,} events; {stitch_extra['cpu']:.2f} CPU = "
        f"{stitch_extra['per_core']:,} events/s per core",
        extra=stitch_extra,
    )
    beside, beside_extra = summary("apart")
    out.add(
        "worker.sink_apart",
        beside,
        "events/s",
        baseline="worker.bare_loop",
        note=f"the same worker with MA_SINK=false beside ma-pipeline sink (two processes, "
        f"chDB owned by the sink), {n:,} events, until both groups committed; "
        f"{beside_extra['cpu']:.2f} CPU for both = {beside_extra['per_core']:,} events/s per core",
        extra=beside_extra,
    )
