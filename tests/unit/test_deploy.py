"""deploy/grafana's dashboard and deploy/prometheus's alert rules are valid, and every metric
they (and the README) name is one the collector, worker, sink or deliverer exports."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.collect.metrics import CollectorMetrics
from pipeline.deliver.loop import DeliveryMetrics
from pipeline.sink.metrics import SinkMetrics
from pipeline.worker.metrics import WorkerMetrics
from tests.conftest import REPO

NAME = re.compile(r"\bma_[a-z_]+\b")


def _registries() -> list[CollectorRegistry]:
    registries = [CollectorMetrics().registry, WorkerMetrics().registry]
    for make in (SinkMetrics, DeliveryMetrics):
        registry = CollectorRegistry()
        make(registry)
        registries.append(registry)
    return registries


def exported() -> set[str]:
    """Every sample name the pieces' registries expose (``_total``, ``_bucket``, …)."""
    names: set[str] = set()
    for registry in _registries():
        for family in registry.collect():
            names.add(family.name)
            names |= {f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")
                      if family.type in ("counter", "histogram")}  # fmt: skip
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "ma-pipeline.json").read_text())
    assert dashboard["panels"], "the dashboard has panels"
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {"MaConsumerLagGrowing", "MaDeadLetterRate", "MaCollector503", "MaSinkRetries",
            "MaDeliveryRetries"} <= {a["alert"] for a in alerts}  # fmt: skip
    return [str(a["expr"]) for a in alerts]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_named_is_exported(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else alert_expressions()
    named = {name for expr in expressions for name in NAME.findall(expr)}
    assert named and named <= exported(), named - exported()


def test_counters_end_in_total_where_queried() -> None:
    counters = {n.removesuffix("_total") for n in exported() if n.endswith("_total")}
    for expr in dashboard_expressions() + alert_expressions():
        for name in NAME.findall(expr):
            assert name not in counters, f"{name} is a counter: query {name}_total"


def test_the_readme_names_metrics_as_exported() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("- **Metrics**") :]
    section = section[: section.index("\n\n")]
    named = set(NAME.findall(section))
    assert {"ma_http_requests_total", "ma_consumer_lag", "ma_triggers_pending"} <= named
    assert named <= exported(), named - exported()


def test_every_metric_the_readme_names_is_exported_under_that_name() -> None:
    """Anywhere in the README, not only its Metrics list: a counter is named with ``_total``
    (``ma_deliveries_total``), as ``/metrics`` exports it."""
    text = (REPO / "README.md").read_text()
    not_metrics = {"ma_aid", "ma_console"}  # the collector's cookie, the console's session
    named = set(re.findall(r"`(ma_[a-z0-9_]+)", text)) - not_metrics
    counters = {
        family.name
        for registry in _registries()
        for family in registry.collect()
        if family.type == "counter"
    }
    assert named <= exported() - counters, sorted(named - (exported() - counters))


def test_every_metric_exported_is_documented_in_the_readme() -> None:
    """The other way round: nothing on a ``/metrics`` that the README does not name (counters
    with ``_total``, histograms and gauges by their name)."""
    text = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`(ma_[a-z0-9_]+)", text))
    families = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for registry in _registries()
        for family in registry.collect()
        if family.name.startswith("ma_")
    }
    assert families <= documented, sorted(families - documented)
