"""Topic values become analyst-table rows (pure functions): one row per value, in the column
order of ``TABLE_COLUMNS``; emails only in ``contact_versions``; nothing for values the tables do
not hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline import codec
from pipeline.sink.rows import ROW_KEYS, TABLE_COLUMNS, rows_for
from pipeline.topics import ANONYMOUS_EVENTS, CONTACT_WORK, DECISIONS

AT = "2026-03-02T09:00:00.120Z"
#: AT as the tables store it: milliseconds since the epoch
AT_MS = 1_772_442_000_120
CONTACT = "b9040a4e-1b0f-5e4c-9c33-1f1c5a8f1a01"
AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"


def as_dict(table: str, row: tuple[Any, ...]) -> dict[str, Any]:
    columns = TABLE_COLUMNS[table]
    assert len(row) == len(columns)
    return dict(zip(columns, row, strict=True))


def event(**extra: Any) -> dict[str, Any]:
    return {"k": "event", "e": {"event_id": "e1", "type": "page_view", "site_id": "acme",
                                "received_at": AT, "anonymous_id": AID, "contact_id": None,
                                "url": "https://www.acme.example/pricing?x=1", "path": "/pricing",
                                "source": "browser", **extra}}  # fmt: skip


@pytest.mark.parametrize("topic", [ANONYMOUS_EVENTS, CONTACT_WORK])  # contact-work: older data
def test_an_anonymous_event_is_one_events_row_without_a_contact(topic: str) -> None:
    [(table, row)] = rows_for(topic, event(pre_identification=True))
    values = as_dict(table, row)
    assert table == "events"
    assert values["contact_id"] == "" and values["anonymous_id"] == AID
    assert values["pre_identification"] == 1
    assert values["received_at"] == AT_MS
    assert values["client_ts"] is None
    assert values["properties"] == "" and values["automated"] == 0


def test_event_properties_are_json_text_and_flags_are_integers() -> None:
    [(table, row)] = rows_for(CONTACT_WORK, event(
        contact_id=CONTACT, properties={"plan": "pro", "seats": 3}, automated=True,
        automated_reason="scanner_user_agent:x", client_ts=AT))  # fmt: skip
    values = as_dict(table, row)
    assert values["contact_id"] == CONTACT
    assert codec.loads(values["properties"]) == {"plan": "pro", "seats": 3}
    assert (values["automated"], values["automated_reason"]) == (1, "scanner_user_agent:x")
    assert values["client_ts"] == AT_MS


@pytest.mark.parametrize("kind", ["linked", "unlinked", "absorb", "due", "erase"])
def test_contact_work_notices_are_not_rows(kind: str) -> None:
    assert rows_for(CONTACT_WORK, {"k": kind, "aid": AID}) == []


def test_an_identity_decision_is_one_row_and_an_unlink_has_no_contact() -> None:
    [(table, row)] = rows_for("identities", {
        "anonymous_id": AID, "contact_id": None, "previous_contact_id": CONTACT,
        "reason": "cookie_relink_limit", "event_id": None, "at": AT})  # fmt: skip
    assert table == "identities"
    assert as_dict(table, row) == {"anonymous_id": AID, "contact_id": "",
                                   "previous_contact_id": CONTACT, "reason": "cookie_relink_limit",
                                   "event_id": "", "at": AT_MS}  # fmt: skip


def test_the_email_lands_only_in_contact_versions() -> None:
    contact = {"contact_id": CONTACT, "email": "ana@acme.io", "consent_email": True,
               "attributes": {"title": "CTO", "employees": 50, "vip": True, "gone": None},
               "crm_status": "lead", "created_at": AT, "updated_at": AT}  # fmt: skip
    [(table, row)] = rows_for("contacts", contact)
    values = as_dict(table, row)
    assert table == "contact_versions" and values["email"] == "ana@acme.io"
    # attribute values are text: numbers and booleans as JSON, empty values left out
    assert values["attributes"] == {"title": "CTO", "employees": "50", "vip": "true"}
    assert (values["consent_email"], values["deleted"], values["crm_id"]) == (1, 0, "")
    others = [
        rows_for(CONTACT_WORK, event(contact_id=CONTACT, email="ana@acme.io")),
        rows_for("scores", {"contact_id": CONTACT, "score": 1, "delta": 1, "rule": "r",
                            "event_id": "e1", "lifecycle_stage": "lead", "at": AT}),
        rows_for("triggers", {"trigger_id": "t1", "rule": "r", "channel": "email",
                              "contact_id": CONTACT, "email": "ana@acme.io", "fired_at": AT,
                              "due_at": AT, "score": 5, "cause_event_ids": ["e1"],
                              "attributes": {"title": "CTO"}}),
    ]  # fmt: skip
    for rows in others:
        assert rows and all("ana@acme.io" not in repr(row) for _, row in rows)


def test_a_contact_tombstone_is_no_row() -> None:
    assert rows_for("contacts", None) == []


def test_a_contact_score_change_also_updates_the_current_score() -> None:
    change = {"contact_id": CONTACT, "anonymous_id": None, "score": 23.5, "delta": 10,
              "rule": "pricing-view", "event_id": "e1", "lifecycle_stage": "lead",
              "at": AT}  # fmt: skip
    rows = rows_for("scores", change)
    assert [table for table, _ in rows] == ["score_changes", "score_state"]
    assert as_dict(*rows[1]) == {"contact_id": CONTACT, "score": 23.5, "lifecycle_stage": "lead",
                                 "at": AT_MS}  # fmt: skip


def test_an_anonymous_score_change_has_no_current_score_row() -> None:
    change = {"contact_id": None, "anonymous_id": AID, "score": 10, "delta": 10,
              "rule": "pricing-view", "event_id": "e1", "lifecycle_stage": "lead",
              "at": AT}  # fmt: skip
    [(table, row)] = rows_for("scores", change)
    assert table == "score_changes"
    assert as_dict(table, row)["contact_id"] == ""


def test_a_trigger_keeps_its_causes_and_attributes() -> None:
    [(table, row)] = rows_for("triggers", {
        "trigger_id": "t1", "rule": "whitepaper-form-prompt", "channel": "web",
        "anonymous_id": AID, "fired_at": AT, "due_at": AT, "score": None,
        "cause_event_ids": ["e1", "e2"]})  # fmt: skip
    values = as_dict(table, row)
    assert values["contact_id"] == "" and values["score"] == 0.0
    assert values["cause_event_ids"] == ["e1", "e2"] and values["attributes"] == "{}"


def test_unknown_topics_are_not_rows() -> None:
    assert rows_for("dead-letter", {"error": "x"}) == []


def test_row_keys_name_existing_columns() -> None:
    for table, (columns, lookup) in ROW_KEYS.items():
        assert set(columns) <= set(TABLE_COLUMNS[table])
        assert 1 <= lookup <= len(columns)


def test_a_trigger_decision_is_one_row_in_column_order() -> None:
    value = {
        "contact_id": None,
        "anonymous_id": "aid-1",
        "at": "2026-03-02T10:00:00Z",
        "rule": "pricing-trial-offer",
        "decision": "skipped",
        "reason": "once_per",
        "event_id": "e-1",
    }
    [(table, row)] = rows_for(DECISIONS, value)
    assert table == "trigger_decisions"
    assert dict(zip(TABLE_COLUMNS[table], row, strict=True)) == {
        "contact_id": "",
        "anonymous_id": "aid-1",
        "at": AT_MS - 120 + 3_600_000,
        "rule": "pricing-trial-offer",
        "decision": "skipped",
        "reason": "once_per",
        "event_id": "e-1",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AT, AT_MS),
        ("2026-03-02T09:00:00.120999Z", AT_MS),  # floored to the millisecond, as ClickHouse does
        ("2026-03-02T11:00:00.120+02:00", AT_MS),
        ("2026-03-02T09:00:00.120", AT_MS),  # no offset: UTC
        (datetime(2026, 3, 2, 9, 0, 0, 120999, tzinfo=UTC), AT_MS),
        ("1969-12-31T23:59:59.9995Z", -1),  # floored, not truncated towards zero
    ],
)
def test_times_are_epoch_milliseconds_as_datetime64_stores_them(value: Any, expected: int) -> None:
    [(_, row)] = rows_for("identities", {"anonymous_id": AID, "reason": "identify", "at": value})
    assert row[TABLE_COLUMNS["identities"].index("at")] == expected
