"""The collector's per-request metrics (``Tally``, ``Timings``) are scraped exactly as the
``prometheus_client`` ``Counter`` and ``Histogram`` they stand in for."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pipeline.collect.metrics import CollectorMetrics, Tally, Timings

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# ``_created`` samples hold the time each series began: equal only up to that time
_CREATED = re.compile(r"^(\w+_created(?:\{.*\})?) \S+$", re.MULTILINE)


def scraped(registry: CollectorRegistry) -> str:
    return _CREATED.sub(r"\1 <time>", generate_latest(registry).decode())


def test_a_tally_is_scraped_as_a_counter_of_the_same_counts() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally("ma_x", "things by route and status", ["route", "status"], ours)
    counter = Counter("ma_x", "things by route and status", ["route", "status"], registry=theirs)
    for labels, amount in [(("/v1/batch", "200"), 1), (("/c/{token}", "302"), 1),
                           (("/v1/batch", "200"), 3), (("/v1/batch", "400"), 1)]:  # fmt: skip
        tally.inc(labels, amount)
        counter.labels(*labels).inc(amount)

    assert scraped(ours) == scraped(theirs)
    assert 'ma_x_total{route="/v1/batch",status="200"} 4.0' in scraped(ours)


def test_timings_are_scraped_as_a_histogram_with_the_same_buckets() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    timings = Timings("ma_t_seconds", "send to ack", BUCKETS, ours)
    histogram = Histogram("ma_t_seconds", "send to ack", buckets=BUCKETS, registry=theirs)
    # on a bound (inclusive ``le``), between bounds, below the first and above the last
    for value in (0.0, 0.001, 0.004, 0.05, 0.3, 1.0, 5.0, 9.0):
        timings.observe(value)
        histogram.observe(value)

    assert scraped(ours) == scraped(theirs)
    assert 'ma_t_seconds_bucket{le="0.001"} 2.0' in scraped(ours)


def test_a_second_metric_of_the_same_name_is_refused() -> None:
    """The registry knows a tally's names (``describe``): a clash fails at start-up, as with
    ``prometheus_client``'s own metrics, instead of exporting two series of one name."""
    registry = CollectorRegistry()
    Tally("ma_x", "things", ["route"], registry)
    try:
        Counter("ma_x", "other things", registry=registry)
    except ValueError as exc:
        assert "Duplicated timeseries" in str(exc)
    else:
        raise AssertionError("a duplicate name was registered")


def test_the_collectors_metrics_count_requests_events_and_keys() -> None:
    metrics = CollectorMetrics()
    metrics.count_request("/v1/batch", 200)
    metrics.count_request("/v1/batch", 200)
    metrics.count_accepted("acme", "page_view", 3)
    metrics.count_key_use("crm-sync")
    metrics.produce_latency.observe(0.004)

    text = generate_latest(metrics.registry).decode()

    assert 'ma_http_requests_total{route="/v1/batch",status="200"} 2.0' in text
    assert 'ma_events_accepted_total{site="acme",type="page_view"} 3.0' in text
    assert 'ma_key_uses_total{key="crm-sync"} 1.0' in text
    assert "ma_produce_latency_seconds_count 1.0" in text
