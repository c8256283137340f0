"""The collector's Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CollectorMetrics:
    """One registry per collector (tests run several in a process).

    Example::

        metrics.count_request("/v1/batch", 200)
        metrics.count_accepted("acme", "page_view", 3)
    """

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
        self.key_uses = Counter(
            "ma_key_uses", "requests that carried a known key, by key id", ["key"], registry=r
        )
        self.broker_ready = Gauge(
            "ma_broker_ready", "1 when the last readiness check passed", registry=r
        )
        # The labelled counters of every request, kept at hand: ``labels()`` costs more than
        # the count itself. Both sets are bounded as the labels are (routes, sites, types).
        self._requests: dict[tuple[str, int], Counter] = {}
        self._accepted: dict[tuple[str, str], Counter] = {}
        self._key_uses: dict[str, Counter] = {}

    def count_request(self, route: str, status: int) -> None:
        """``ma_http_requests{route, status}`` + 1."""
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[route, status] = self.requests.labels(route, str(status))
        counter.inc()

    def count_accepted(self, site_id: str, kind: str, count: int = 1) -> None:
        """``ma_events_accepted{site, type}`` + ``count``."""
        counter = self._accepted.get((site_id, kind))
        if counter is None:
            counter = self._accepted[site_id, kind] = self.accepted.labels(site_id, kind)
        counter.inc(count)

    def count_key_use(self, key_id: str) -> None:
        """``ma_key_uses_total{key}`` + 1 (key ids are few: those of the rules file)."""
        counter = self._key_uses.get(key_id)
        if counter is None:
            counter = self._key_uses[key_id] = self.key_uses.labels(key_id)
        counter.inc()
