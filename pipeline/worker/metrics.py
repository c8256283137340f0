"""The worker's Prometheus metrics (served on the worker's web port at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.processed = Counter("ma_worker_messages", "messages processed", ["agent"], registry=r)
        self.produced = Counter("ma_worker_produced", "records produced", ["topic"], registry=r)
        self.decisions = Counter(
            "ma_worker_decisions",
            "identity decisions, duplicates, automated events, triggers fired/scheduled/skipped",
            ["what"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ma_worker_dead_letters",
            "messages the worker could not process",
            ["source"],
            registry=r,
        )
        self.rules_refused = Counter(
            "ma_rules_refused", "rules-file reloads refused because of errors", registry=r
        )
        self.rules_version = Gauge(
            "ma_rules_version",
            "1 for the rules file in force, labelled by the first 16 hex digits of its SHA-256",
            ["sha256"],
            registry=r,
        )
        self.lag = Gauge(
            "ma_consumer_lag",
            "records not yet committed, per consumer group and topic (every 15 s)",
            ["group", "topic"],
            registry=r,
        )
        self.pending = Gauge(
            "ma_triggers_pending",
            "delayed triggers pending in this worker's partitions, per table",
            ["table"],
            registry=r,
        )
