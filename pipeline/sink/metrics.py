"""The sink's Prometheus metrics: on the worker's ``/metrics`` when the worker runs the sink,
on the sink's own ``/metrics`` when it runs as ``ma-pipeline sink``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records = Counter("ma_sink_records", "records the sink read", registry=r)
        self.rows = Counter("ma_sink_rows", "rows written to ClickHouse", ["table"], registry=r)
        self.retries = Counter(
            "ma_sink_retries",
            "ClickHouse writes retried (unavailable, errors)",
            ["table"],
            registry=r,
        )
        self.seconds = Histogram(
            "ma_sink_batch_seconds", "time to write one batch to ClickHouse", registry=r
        )
        self.erasures = Counter("ma_sink_erasures", "erasures carried out", registry=r)
        self.dead_letters = Counter(
            "ma_sink_dead_letters", "records the sink could not turn into rows", registry=r
        )
