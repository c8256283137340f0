"""Turning topic values into ClickHouse rows (pure functions).

``rows_for(topic_short_name, value)`` returns ``[(table, row_tuple), …]`` in the column order of
``TABLE_COLUMNS``. Email addresses are kept only in ``contact_versions`` (one place to erase).
Times are whole milliseconds since the epoch, what the tables' ``DateTime64(3, 'UTC')`` columns
store: clickhouse-connect writes such an integer as it is, where it converts a ``datetime`` value
by value (and the sink's row keys compare times as milliseconds, ``pipeline.sink.writer``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import codec
from pipeline.topics import ANONYMOUS_EVENTS, CONTACT_WORK, DECISIONS

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": (
        "event_id", "type", "site_id", "received_at", "client_ts", "source", "anonymous_id",
        "contact_id", "pre_identification", "url", "path", "referrer", "title", "name",
        "form_id", "campaign_id", "properties", "automated", "automated_reason", "user_agent",
        "user_id", "identity_refused",
    ),
    "identities": ("anonymous_id", "contact_id", "previous_contact_id", "reason", "event_id", "at"),
    "contact_versions": (
        "contact_id", "email", "attributes", "consent_email", "crm_status", "crm_id",
        "created_at", "updated_at", "deleted",
    ),
    "score_changes": (
        "contact_id", "anonymous_id", "score", "delta", "rule", "event_id", "lifecycle_stage", "at",
    ),
    "score_state": ("contact_id", "score", "lifecycle_stage", "at"),
    "triggers": (
        "trigger_id", "rule", "channel", "contact_id", "anonymous_id", "fired_at", "due_at",
        "score", "cause_event_ids", "attributes",
    ),
    "deliveries": (
        "trigger_id", "destination", "attempt", "status", "http_status", "error", "at",
        "next_attempt_at",
    ),
    "trigger_decisions": (
        "contact_id", "anonymous_id", "at", "rule", "decision", "reason", "event_id",
    ),
}  # fmt: skip

#: Tables whose rows the sink deduplicates against what is already stored: the columns that
#: identify a row (for identities and score changes, the table's sorting key, which is what
#: ReplacingMergeTree would collapse on) and how many leading ones look stored rows up.
ROW_KEYS: dict[str, tuple[tuple[str, ...], int]] = {
    "events": (("event_id",), 1),
    "triggers": (("trigger_id",), 1),
    "identities": (("anonymous_id", "at", "contact_id", "reason"), 1),
    "score_changes": (("contact_id", "anonymous_id", "at", "rule", "event_id"), 2),
    "deliveries": (("destination", "trigger_id", "attempt"), 2),
    "trigger_decisions": (("contact_id", "anonymous_id", "at", "rule", "event_id"), 2),
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _time(value: Any) -> int | None:
    """An ISO 8601 time (or a ``datetime``) as epoch milliseconds, floored as ClickHouse does;
    a time without an offset is UTC."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _text_map(values: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else codec.dumps(v).decode()
        for k, v in values.items()
        if v is not None
    }


def rows_for(topic: str, value: dict[str, Any] | None) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows one topic value becomes (none for values the tables do not hold)."""
    if value is None:
        return []
    if topic in (CONTACT_WORK, ANONYMOUS_EVENTS):
        if value.get("k") != "event":
            return []
        e = value["e"]
        properties = e.get("properties") or {}
        return [("events", (
            _s(e["event_id"]), e["type"], _s(e.get("site_id")), _time(e["received_at"]),
            _time(e.get("client_ts")), _s(e.get("source")), _s(e.get("anonymous_id")),
            _s(e.get("contact_id")), 1 if e.get("pre_identification") else 0, _s(e.get("url")),
            _s(e.get("path")), _s(e.get("referrer")), _s(e.get("title")), _s(e.get("name")),
            _s(e.get("form_id")), _s(e.get("campaign_id")),
            codec.dumps(properties).decode() if properties else "",
            1 if e.get("automated") else 0, _s(e.get("automated_reason")),
            _s(e.get("user_agent")), _s(e.get("user_id")), _s(e.get("identity_refused")),
        ))]  # fmt: skip
    if topic == "identities":
        return [("identities", (
            value["anonymous_id"], _s(value.get("contact_id")),
            _s(value.get("previous_contact_id")), value["reason"], _s(value.get("event_id")),
            _time(value["at"]),
        ))]  # fmt: skip
    if topic == "contacts":
        return [("contact_versions", (
            value["contact_id"], _s(value.get("email")), _text_map(value.get("attributes") or {}),
            1 if value.get("consent_email") else 0, _s(value.get("crm_status")),
            _s(value.get("crm_id")), _time(value.get("created_at")), _time(value["updated_at"]),
            1 if value.get("deleted") else 0,
        ))]  # fmt: skip
    if topic == "scores":
        at = _time(value["at"])
        rows: list[tuple[str, tuple[Any, ...]]] = [("score_changes", (
            _s(value.get("contact_id")), _s(value.get("anonymous_id")), float(value["score"]),
            float(value["delta"]), value["rule"], _s(value.get("event_id")),
            value["lifecycle_stage"], at,
        ))]  # fmt: skip
        if value.get("contact_id"):
            rows.append(("score_state", (value["contact_id"], float(value["score"]),
                                         value["lifecycle_stage"], at)))  # fmt: skip
        return rows
    if topic == "deliveries":
        return [("deliveries", (
            value["trigger_id"], value["destination"], int(value["attempt"]), value["status"],
            value.get("http_status"), _s(value.get("error")), _time(value["at"]),
            _time(value.get("next_attempt_at")),
        ))]  # fmt: skip
    if topic == DECISIONS:
        return [("trigger_decisions", (
            _s(value.get("contact_id")), _s(value.get("anonymous_id")), _time(value["at"]),
            value["rule"], value["decision"], _s(value.get("reason")), _s(value.get("event_id")),
        ))]  # fmt: skip
    if topic == "triggers":
        return [("triggers", (
            value["trigger_id"], value["rule"], value["channel"], _s(value.get("contact_id")),
            _s(value.get("anonymous_id")), _time(value["fired_at"]), _time(value["due_at"]),
            float(value.get("score") or 0), list(value.get("cause_event_ids") or []),
            codec.dumps(value.get("attributes") or {}).decode(),
        ))]  # fmt: skip
    return []
