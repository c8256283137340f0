"""The collector's Prometheus metrics (``GET /metrics``).

What every request updates (requests by route and status, accepted events, the produce latency,
key uses) is counted in plain dicts and lists (``Tally``, ``Timings``) and read by the registry
only when ``/metrics`` is scraped: a ``prometheus_client`` ``Counter`` or ``Histogram`` takes a
lock and checks its arguments on every update, three of them on a one-event ``POST /v1/batch``
(about a tenth of what our own code spends on it, by py-spy). The label sets are as bounded as
before (routes, statuses, sites, event types, key ids). The rest are ordinary
``prometheus_client`` metrics (rare updates).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class Tally:
    """A labelled counter updated from one thread (the event loop): a dict of label values to
    counts, exported as a ``prometheus_client`` counter when scraped (``name_total`` and
    ``name_created`` samples, as ``Counter`` exports them).

    Example::

        requests = Tally("ma_http_requests", "HTTP requests", ["route", "status"], registry)
        requests.inc(("/v1/batch", "200"))
    """

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.counts: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        counts = self.counts
        if labels in counts:
            counts[labels] += amount
        else:
            counts[labels] = amount
            self._created[labels] = time.time()

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in list(self.counts.items()):
            family.add_metric(labels, count, created=self._created[labels])
        yield family


class Timings:
    """An unlabelled histogram updated from one thread: bucket counts in a list, exported as a
    ``prometheus_client`` histogram when scraped (buckets ``le`` as ``Histogram`` spells them).

    Example::

        latency = Timings("ma_produce_latency_seconds", "send to ack", (0.001, 0.01), registry)
        latency.observe(0.004)
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation, self.bounds = name, documentation, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bound (+Inf)
        #: Each bucket's ``le`` as ``Histogram`` writes it ("1.0", "+Inf").
        self._les = [floatToGoString(b) for b in (*buckets, float("inf"))]  # type: ignore[no-untyped-call]
        self.sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        # ``le`` is inclusive: a value equal to a bound counts in that bound's bucket
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        buckets, total = [], 0
        for le, count in zip(self._les, self.counts, strict=True):
            total += count
            buckets.append((le, total))
        family.add_metric([], buckets, self.sum)
        family.samples.append(Sample(f"{self.name}_created", {}, self._created))
        yield family


class CollectorMetrics:
    """One registry per collector (tests run several in a process).

    Example::

        metrics.count_request("/v1/batch", 200)
        metrics.count_accepted("acme", "page_view", 3)
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Tally(
            "ma_http_requests", "HTTP requests by route and status", ["route", "status"], r
        )
        self.accepted = Tally(
            "ma_events_accepted", "events accepted onto ma.events", ["site", "type"], r
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
        self.produce_latency = Timings(
            "ma_produce_latency_seconds",
            "time from send to acknowledgement (acks=all)",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            r,
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
        self.key_uses = Tally(
            "ma_key_uses", "requests that carried a known key, by key id", ["key"], r
        )
        self.broker_ready = Gauge(
            "ma_broker_ready", "1 when the last readiness check passed", registry=r
        )

    def count_request(self, route: str, status: int) -> None:
        """``ma_http_requests{route, status}`` + 1."""
        self.requests.inc((route, str(status)))

    def count_accepted(self, site_id: str, kind: str, count: int = 1) -> None:
        """``ma_events_accepted{site, type}`` + ``count``."""
        self.accepted.inc((site_id, kind), count)

    def count_key_use(self, key_id: str) -> None:
        """``ma_key_uses_total{key}`` + 1 (key ids are few: those of the rules file)."""
        self.key_uses.inc((key_id,))
