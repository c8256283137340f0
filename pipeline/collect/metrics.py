"""The collector's Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CollectorMetrics:
    """One registry per collector (tests run several in a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ma_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.accepted = Counter(
            "ma_events_accepted", "events accepted onto ma.events", ["site", "type"], registry=r
        )
        self.rejected = Counter(
            "ma_events_rejected",
            "inputs rejected (dead-lettered)",
            ["source", "reason"],
            registry=r,
        )
        self.automated = Counter(
            "ma_events_automated", "email clicks/opens judged automated", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "ma_rate_limited", "requests refused with 429", ["site"], registry=r
        )
        self.broker_errors = Counter(
            "ma_broker_errors", "sends the broker did not acknowledge in time", registry=r
        )
        self.produce_latency = Histogram(
            "ma_produce_latency_seconds",
            "time from send to acknowledgement (acks=all)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rules_refused = Counter(
            "ma_rules_refused", "rules-file reloads refused because of errors", registry=r
        )
        self.spooled = Gauge(
            "ma_spooled_records",
            "records answered for (pixels, email links) waiting for the broker",
            registry=r,
        )
        self.spool_dropped = Counter(
            "ma_spool_dropped", "spooled records dropped because the spool was full", registry=r
        )
        self.broker_ready = Gauge(
            "ma_broker_ready", "1 when the last readiness check passed", registry=r
        )
