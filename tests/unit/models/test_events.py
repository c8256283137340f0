from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pipeline.models import Event, InboundEvent

AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"


def test_epoch_milliseconds_and_iso_times_are_both_accepted() -> None:
    a = InboundEvent.model_validate({"type": "custom", "name": "x", "ts": 1767225600000})
    b = InboundEvent.model_validate({"type": "custom", "name": "x", "ts": "2026-01-01T00:00:00Z"})
    assert a.ts == b.ts == datetime(2026, 1, 1, tzinfo=UTC)


def test_naive_times_are_read_as_utc() -> None:
    event = InboundEvent.model_validate({"type": "custom", "name": "x", "ts": "2026-01-01T09:00"})
    assert event.ts == datetime(2026, 1, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "missing"),
    [
        ({"type": "page_view"}, "url"),
        ({"type": "custom"}, "name"),
        ({"type": "form_submit"}, "email"),
        ({"type": "identify"}, "email"),
        ({"type": "email_sent"}, "contact_id"),
    ],
)
def test_each_type_names_its_required_fields(raw: dict[str, object], missing: str) -> None:
    assert InboundEvent.model_validate(raw).missing_fields() == [
        (missing, f"required for {raw['type']}")
    ]


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "nonsense"},
        {"type": "custom", "name": "x", "ts": True},
        {"type": "custom", "name": "x", "properties": "not a map"},
        {"type": "custom", "name": "x", "properties": {f"k{i}": i for i in range(101)}},
        {"type": "custom", "name": "x", "properties": {"k": "v" * 5000}},
        {"type": "custom", "name": "x", "properties": {"a": {"b": {"c": {"d": {"e": 1}}}}}},
        {"type": "page_view", "url": "u" * 5000},
        {"type": "custom", "name": "x", "event_id": "not-a-uuid"},
    ],
)
def test_wrong_types_and_oversized_values_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        InboundEvent.model_validate(raw)


def test_event_key_prefers_the_cookie() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event(
        event_id="e",
        type="custom",
        site_id="s",
        received_at=now,
        source="browser",
        anonymous_id=AID,
        contact_id="c",
    )
    assert event.key() == AID
    assert event.model_copy(update={"anonymous_id": None}).key() == "c"
    assert event.model_copy(update={"anonymous_id": None, "contact_id": None}).key() == "e"
