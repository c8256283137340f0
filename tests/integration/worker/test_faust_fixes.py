"""The defects ``pipeline.worker.faust_fixes`` works around are still there. When one of these
tests fails, the defect is fixed upstream: drop its work-around (and this test)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from pipeline.settings import Settings
from pipeline.topics import TopicSpec, ensure_topics
from pipeline.worker.faust_fixes import ConsumerThread, Transport, broker_url

pytestmark = pytest.mark.integration


async def test_seek_to_committed_does_not_rewind_a_partition_never_committed(
    settings: Settings,
) -> None:
    """Work-around 1: aiokafka's ``seek_to_committed`` leaves a partition without a committed
    offset where the fetcher got to, so records Faust dropped there are never fetched again."""
    spec = TopicSpec(f"seek-{uuid.uuid4().hex[:6]}", "none", "test", public=False)
    await ensure_topics(settings, (spec,))
    topic = settings.topic(spec.name)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b"%d" % n, partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        fetched: list[bytes] = []
        async with asyncio.timeout(30):
            while len(fetched) < 3:
                batch = await consumer.getmany(tp, timeout_ms=500)
                fetched += [r.value for r in batch.get(tp, [])]
        committed = await consumer.seek_to_committed()  # what Faust's perform_seek does
        assert committed == {tp: None}
        assert await consumer.position(tp) == 3, (
            "aiokafka now rewinds a partition without a committed offset: "
            "drop work-around 1 of pipeline/worker/faust_fixes.py"
        )
    finally:
        await consumer.stop()


async def test_flow_control_resume_clears_every_queue() -> None:
    """Work-around 2 (faust-streaming #596): resuming flow control empties the agents' queues,
    messages of the current assignment included."""
    flow = FlowControlEvent()
    queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()
    await queue.put(1)
    flow.suspend()
    flow.resume()
    assert queue.empty(), (
        "mode's flow control no longer clears queues on resume: "
        "drop work-around 2 of pipeline/worker/faust_fixes.py"
    )


def test_the_worker_runs_both_work_arounds(settings: Settings) -> None:
    from pipeline.rules import RulesWatcher
    from pipeline.worker.app import Worker
    from pipeline.worker.faust_fixes import Monitor, Recovery

    app = Worker(settings, RulesWatcher(settings.config), web=False).app
    assert isinstance(app.transport, Transport)
    assert isinstance(app.consumer._thread, ConsumerThread)  # type: ignore[attr-defined]
    assert isinstance(app.tables.recovery, Recovery)  # type: ignore[attr-defined]
    assert type(app.monitor) is Monitor  # the sensor Faust adds to app.sensors as it starts
    assert app.conf.broker[0].scheme == broker_url(settings.bootstrap).split(":")[0]
