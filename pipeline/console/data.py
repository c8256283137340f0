"""What the console shows, and where each figure comes from: SQL on the analyst tables (the
same tables and read-only path as ``ma-pipeline query``), the worker's own state (pending
delayed triggers, as ``ma-pipeline triggers pending``), and the Prometheus counters of the
collector and the worker (accepted, rejected, 503s, retries). Nothing is reconstructed here:
a reason the page shows is one the pipeline recorded (``trigger_decisions`` for skipped
triggers, ``identities`` for identity decisions, ``events.automated_reason`` for scanners).

Each query is a constant of this module so that a test can run the same SQL through
``ma-pipeline query`` and compare.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings

#: (sql, parameters) → (columns, rows); raises ``ConsoleDataUnavailable`` when ClickHouse is away
Reader = Callable[[str, dict[str, Any]], Awaitable[tuple[list[str], list[list[Any]]]]]


class ConsoleDataUnavailable(Exception):
    """ClickHouse (or the process that owns embedded chDB) did not answer."""


# -- health -------------------------------------------------------------------------------------
EVENTS_TOTAL = "SELECT count() FROM {db}.events"
EVENTS_LAST_HOUR = "SELECT count() FROM {db}.events WHERE received_at > now64(3) - INTERVAL 1 HOUR"
EVENTS_PER_MINUTE = (
    "SELECT toStartOfMinute(received_at) AS minute, type, count() AS events FROM {db}.events "
    "WHERE received_at > now64(3) - INTERVAL 1 HOUR GROUP BY minute, type ORDER BY minute, type"
)
DELIVERY_RETRIES = (
    "SELECT countIf(status = 'retrying') AS retrying, countIf(status = 'dead') AS dead, "
    "countIf(status = 'delivered') AS delivered FROM {db}.deliveries"
)

# -- activation ---------------------------------------------------------------------------------
COOKIES_SEEN = "SELECT uniqExact(anonymous_id) FROM {db}.events WHERE anonymous_id != ''"
COOKIES_IDENTIFIED = (
    "SELECT uniqExact(anonymous_id) FROM {db}.identities "
    "WHERE contact_id != '' AND previous_contact_id = ''"
)
IDENTIFIED_BY_PATH = (
    "SELECT reason, count() AS cookies FROM ("
    "  SELECT anonymous_id, argMin(reason, at) AS reason FROM {db}.identities"
    "  WHERE contact_id != '' AND previous_contact_id = '' GROUP BY anonymous_id"
    ") GROUP BY reason ORDER BY cookies DESC, reason"
)
ACTIVATION_BY_DAY = (
    "SELECT day, sum(seen) AS seen, sum(identified) AS identified FROM ("
    "  SELECT toDate(min(received_at)) AS day, 1 AS seen, 0 AS identified FROM {db}.events"
    "  WHERE anonymous_id != '' GROUP BY anonymous_id"
    "  UNION ALL"
    "  SELECT toDate(min(at)) AS day, 0 AS seen, 1 AS identified FROM {db}.identities"
    "  WHERE contact_id != '' AND previous_contact_id = '' GROUP BY anonymous_id"
    ") GROUP BY day ORDER BY day"
)

# -- funnel -------------------------------------------------------------------------------------
STAGES = (
    "SELECT lifecycle_stage, count() AS contacts FROM {db}.scores "
    "GROUP BY lifecycle_stage ORDER BY contacts DESC"
)
SCORE_HISTOGRAM = (
    "SELECT toInt64(floor(score / 10) * 10) AS bucket, count() AS contacts FROM {db}.scores "
    "GROUP BY bucket ORDER BY bucket"
)
CONTACTS_TOTAL = "SELECT count() FROM {db}.contacts"

# -- triggers -----------------------------------------------------------------------------------
FIRED_BY_RULE = (
    "SELECT rule, channel, count() AS fired FROM {db}.triggers GROUP BY rule, channel "
    "ORDER BY fired DESC, rule"
)
SKIPPED_BY_REASON = (
    "SELECT rule, reason, count() AS skipped FROM {db}.trigger_decisions "
    "WHERE decision = 'skipped' GROUP BY rule, reason ORDER BY skipped DESC, rule, reason"
)
DELIVERIES_BY_DESTINATION = (
    "SELECT destination, status, count() AS attempts FROM {db}.deliveries "
    "GROUP BY destination, status ORDER BY destination, status"
)

# -- contact ------------------------------------------------------------------------------------
CONTACT = (
    "SELECT contact_id, email, attributes, consent_email, crm_status, crm_id, created_at, "
    "updated_at FROM {db}.contacts WHERE contact_id = {{c:String}}"
)
CONTACT_SCORE = (
    "SELECT score, lifecycle_stage, as_of FROM {db}.scores WHERE contact_id = {{c:String}}"
)
CONTACT_COOKIES = (
    "SELECT DISTINCT anonymous_id FROM {db}.identities "
    "WHERE contact_id = {{c:String}} OR previous_contact_id = {{c:String}}"
)
CONTACT_TIMELINE = (
    "SELECT received_at AS at, type, path, name, form_id, campaign_id, anonymous_id, "
    "from_anonymous_history, automated, automated_reason, identity_refused, event_id "
    "FROM {db}.contact_events "
    "WHERE contact_id = {{c:String}} ORDER BY at, event_id LIMIT 2000"
)
CONTACT_IDENTITY = (
    "SELECT at, anonymous_id, contact_id, previous_contact_id, reason, event_id "
    "FROM {db}.identities WHERE contact_id = {{c:String}} OR previous_contact_id = {{c:String}} "
    "ORDER BY at LIMIT 500"
)
CONTACT_SCORES = (
    "SELECT at, rule, delta, score, lifecycle_stage, event_id, anonymous_id "
    "FROM {db}.score_changes "
    "WHERE contact_id = {{c:String}} OR anonymous_id IN {{a:Array(String)}} "
    "ORDER BY at LIMIT 2000"
)
CONTACT_TRIGGERS = (
    "SELECT fired_at AS at, rule, channel, trigger_id, due_at, cause_event_ids "
    "FROM {db}.triggers WHERE contact_id = {{c:String}} OR anonymous_id IN {{a:Array(String)}} "
    "ORDER BY at LIMIT 500"
)
CONTACT_DECISIONS = (
    "SELECT at, rule, decision, reason, event_id, anonymous_id FROM {db}.trigger_decisions "
    "WHERE contact_id = {{c:String}} OR anonymous_id IN {{a:Array(String)}} "
    "ORDER BY at LIMIT 2000"
)


def sql(template: str, database: str) -> str:
    """A query of this module for the deployment's database (``{{c:String}}`` stays a
    parameter placeholder)."""
    return template.format(db=database)


# -- Prometheus counters of the pieces ----------------------------------------------------------
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """Prometheus text (another process's ``/metrics``) → ``{sample name: [(labels, value)]}``."""
    return _by_name(text_string_to_metric_families(text))


def samples(registry: CollectorRegistry) -> Samples:
    """The same of a registry of this process (the worker's own counters)."""
    return _by_name(registry.collect())


def _by_name(families: Iterable[Metric]) -> Samples:
    found: Samples = {}
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    """The sum of a metric's samples whose labels include ``match``."""
    return sum(
        value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def by_label(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, *labels: str
) -> dict[str, float]:
    """A metric summed per value of ``labels`` (joined with " · ")."""
    out: dict[str, float] = {}
    for found, value in samples.get(name, []):
        key = " · ".join(found.get(label, "") for label in labels)
        out[key] = out.get(key, 0.0) + value
    return out


async def collector_metrics(settings: Settings) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The collector's counters, or {} when it does not answer (shown as "not reachable")."""
    timeout = aiohttp.ClientTimeout(total=1.5)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(settings.collector_metrics) as response,
        ):
            if response.status != 200:
                return {}
            return parse_metrics(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return {}
