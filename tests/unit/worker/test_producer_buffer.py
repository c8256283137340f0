"""The worker's ``ProducerBuffer`` (``pipeline.worker.faust_fixes``) answers ``size`` as Faust's
does, reading ``producer_threaded`` once: if Faust moves what ``size`` counts, or stops reading
it on the conductor's path, this fails."""

from __future__ import annotations

import inspect
from typing import Any

import faust
from faust.transport import conductor
from faust.transport.producer import ProducerBuffer as FaustProducerBuffer

from pipeline.worker.faust_fixes import Producer, ProducerBuffer, Transport, broker_url


def test_the_conductor_still_waits_on_the_buffer_for_each_message() -> None:
    # what makes the cheaper size worth having: Faust's on_message awaits wait_until_ebb,
    # which reads size
    assert "await wait_until_producer_ebb()" in inspect.getsource(conductor)
    assert ".size" in inspect.getsource(FaustProducerBuffer.wait_until_ebb)


async def test_its_size_is_faust_s_and_the_setting_is_read_once(monkeypatch: Any) -> None:
    app = faust.App("buffer-test", broker=broker_url("127.0.0.1:9"), producer_threaded=False)
    assert isinstance(app.transport, Transport)
    producer = app.producer
    assert isinstance(producer, Producer) and isinstance(producer.buffer, ProducerBuffer)
    buffer = producer.buffer
    assert buffer.app is app
    faust_size = FaustProducerBuffer.size.fget  # type: ignore[attr-defined]
    for n in range(3):
        assert buffer.size == faust_size(buffer) == n
        buffer.pending.put_nowait(object())

    reads = 0
    settings = type(app.conf)
    real = settings.producer_threaded

    def counted(self: Any) -> Any:
        nonlocal reads
        reads += 1
        return real.__get__(self, settings)

    monkeypatch.setattr(settings, "producer_threaded", property(counted))
    fresh = ProducerBuffer()
    fresh.app = app
    for _ in range(5):
        assert fresh.size == 0
    assert reads == 1
