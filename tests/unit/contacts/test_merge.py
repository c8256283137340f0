"""Field-level merge of contact updates from several sources (CONTRACT §5, merge rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import codec
from pipeline.clock import from_millis
from pipeline.contacts import ContactState, apply_update, is_empty
from pipeline.contacts.merge import set_consent
from pipeline.rules.models import Merge
from tests.unit.factories import ANA, DAY, HOUR, T0, contact, example_rules, rules

MERGE = example_rules().merge  # title: [crm, form, import], default: latest
C = contact(ANA)


def update(source: str, **fields: Any) -> dict[str, Any]:
    attributes = fields.pop("attributes", {})
    return {
        "contact_id": C,
        "op": "upsert",
        "source": source,
        "email": ANA,
        "attributes": attributes,
        **fields,
    }


def merged(*steps: tuple[dict[str, Any], int], merge: Merge = MERGE) -> ContactState:
    state = ContactState(contact_id=C)
    for value, at in steps:
        apply_update(state, value, merge, at)
    return state


def title(source: str, value: Any) -> dict[str, Any]:
    return update(source, attributes={"title": value})


# -- source priority -------------------------------------------------------------------------------
@pytest.mark.parametrize("crm_first", [True, False])
def test_crm_title_beats_form_title_regardless_of_order(crm_first: bool) -> None:
    steps = [(title("crm", "CTO"), T0), (title("form", "Developer"), T0 + HOUR)]
    if not crm_first:
        steps = [(title("form", "Developer"), T0), (title("crm", "CTO"), T0 + HOUR)]
    state = merged(*steps)
    assert state.value("title") == "CTO"
    assert state.attributes["title"]["src"] == "crm"


def test_form_title_beats_import_title() -> None:
    state = merged((title("form", "Head of Growth"), T0), (title("import", "Intern"), T0 + DAY))
    assert state.value("title") == "Head of Growth"


def test_lower_priority_source_fills_an_empty_field() -> None:
    assert merged((title("import", "Intern"), T0)).value("title") == "Intern"


def test_same_source_newer_value_wins() -> None:
    state = merged((title("crm", "CTO"), T0), (title("crm", "CEO"), T0 + HOUR))
    assert state.value("title") == "CEO"


def test_same_source_older_value_arriving_late_does_not_overwrite() -> None:
    state = merged((title("crm", "CEO"), T0 + HOUR), (title("crm", "CTO"), T0))
    assert state.value("title") == "CEO"


def test_unknown_source_ranks_last() -> None:
    state = merged((title("import", "Intern"), T0), (title("zapier", "CEO"), T0 + DAY))
    assert state.value("title") == "Intern"


def test_unknown_source_fills_an_empty_field() -> None:
    assert merged((title("zapier", "CEO"), T0)).value("title") == "CEO"


def test_unknown_sources_among_themselves_take_the_newest() -> None:
    state = merged((title("zapier", "CEO"), T0 + HOUR), (title("segment", "CTO"), T0))
    assert state.value("title") == "CEO"
    state = merged((title("zapier", "CEO"), T0), (title("segment", "CTO"), T0 + HOUR))
    assert state.value("title") == "CTO"


def test_update_without_source_counts_as_unknown() -> None:
    state = merged((title("import", "Intern"), T0), ({"attributes": {"title": "X"}}, T0 + 1))
    assert state.value("title") == "Intern"


def test_same_value_from_a_higher_source_takes_the_field_over() -> None:
    state = merged(
        (title("form", "CTO"), T0),
        (title("crm", "CTO"), T0 + HOUR),  # the CRM confirms the form's value
        (title("form", "Developer"), T0 + 2 * HOUR),
    )
    assert state.value("title") == "CTO"
    assert state.attributes["title"]["src"] == "crm"


def test_same_value_again_from_the_same_source_is_no_change() -> None:
    state = merged((title("crm", "CTO"), T0))
    assert not apply_update(state, title("crm", "CTO"), MERGE, T0 + HOUR)


def test_fields_merge_independently() -> None:
    state = merged(
        (update("crm", attributes={"title": "CTO"}), T0),
        (update("import", attributes={"title": "Intern", "department": "IT"}), T0 + 1),
    )
    assert (state.value("title"), state.value("department")) == ("CTO", "IT")


# -- latest ----------------------------------------------------------------------------------------
def test_latest_policy_takes_the_newest_by_time() -> None:
    state = merged(
        (update("crm", attributes={"city": "Lyon"}), T0),
        (update("form", attributes={"city": "Paris"}), T0 + HOUR),
    )
    assert state.value("city") == "Paris"


def test_latest_policy_ignores_an_older_update_arriving_late() -> None:
    state = merged(
        (update("form", attributes={"city": "Paris"}), T0 + HOUR),
        (update("crm", attributes={"city": "Lyon"}), T0),
    )
    assert state.value("city") == "Paris"


def test_latest_policy_remembers_when_a_value_was_last_confirmed() -> None:
    state = merged(
        (update("crm", attributes={"city": "Paris"}), T0),
        (update("crm", attributes={"city": "Paris"}), T0 + 2 * HOUR),
        (update("form", attributes={"city": "Lyon"}), T0 + HOUR),  # older than the confirmation
    )
    assert state.value("city") == "Paris"


def test_default_policy_applies_to_unlisted_fields() -> None:
    merge = rules("merge: {default: [crm, form], fields: {city: latest}}").merge
    state = merged(
        (update("crm", attributes={"industry": "Banking"}), T0),
        (update("form", attributes={"industry": "Retail"}), T0 + 1),
        merge=merge,
    )
    assert state.value("industry") == "Banking"
    state = merged(
        (update("crm", attributes={"city": "Paris"}), T0),
        (update("form", attributes={"city": "Lyon"}), T0 + 1),
        merge=merge,
    )
    assert state.value("city") == "Lyon"


# -- empty values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [None, "", "   ", [], {}])
@pytest.mark.parametrize("source", ["crm", "form", "zapier"])
def test_empty_value_never_overwrites_a_non_empty_one(source: str, empty: Any) -> None:
    state = merged((title("import", "Intern"), T0), (title(source, empty), T0 + DAY))
    assert state.value("title") == "Intern"


@pytest.mark.parametrize("empty", [None, "", "  ", [], {}])
def test_empty_value_alone_never_sets_a_field(empty: Any) -> None:
    assert "title" not in merged((title("crm", empty), T0)).attributes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("", True),
        (" \t", True),
        ([], True),
        ({}, True),
        ("x", False),
        (0, False),
        (False, False),
        (["a"], False),
    ],
)
def test_is_empty(value: Any, expected: bool) -> None:
    assert is_empty(value) is expected


def test_false_and_zero_are_values() -> None:
    state = merged((update("crm", attributes={"employees": 0, "partner": False}), T0))
    assert (state.value("employees"), state.value("partner")) == (0, False)


# -- created_at ------------------------------------------------------------------------------------
def test_created_at_keeps_the_earliest() -> None:
    early, late = T0 - 400 * DAY, T0 - 10 * DAY
    assert (
        merged(
            (update("crm", created_at=late), T0), (update("import", created_at=early), T0 + 1)
        ).created_at
        == early
    )
    assert (
        merged(
            (update("import", created_at=early), T0), (update("crm", created_at=late), T0 + 1)
        ).created_at
        == early
    )


def test_created_at_defaults_to_the_first_update() -> None:
    assert merged((title("form", "CTO"), T0), (title("crm", "CEO"), T0 + DAY)).created_at == T0


def test_created_at_from_the_crm_predates_the_first_form() -> None:
    state = merged((title("form", "CTO"), T0), (update("crm", created_at=T0 - 800 * DAY), T0 + 1))
    assert state.created_at == T0 - 800 * DAY


@pytest.mark.parametrize(
    "created",
    [
        datetime(2024, 3, 1, tzinfo=UTC),
        "2024-03-01T00:00:00Z",
        "2024-03-01T00:00:00+00:00",
        "2024-03-01T01:00:00+01:00",
        "2024-03-01T00:00:00",
        1_709_251_200_000,
        "1709251200000",
    ],
)
def test_created_at_accepts_datetimes_iso_text_and_epoch_ms(created: Any) -> None:
    assert merged((update("crm", created_at=created), T0)).created_at == 1_709_251_200_000


def test_created_at_survives_the_json_round_trip_of_the_contact_updates_topic() -> None:
    value = codec.loads(codec.dumps(update("crm", created_at=datetime(2024, 3, 1, tzinfo=UTC))))
    assert merged((value, T0)).created_at == 1_709_251_200_000


# -- consent ---------------------------------------------------------------------------------------
def test_consent_latest_statement_wins() -> None:
    state = merged(
        (update("form", consent_email=True), T0), (update("crm", consent_email=False), T0 + HOUR)
    )
    assert state.consent_email is False
    state = merged(
        (update("crm", consent_email=False), T0), (update("form", consent_email=True), T0 + HOUR)
    )
    assert state.consent_email is True


def test_older_consent_statement_arriving_late_is_ignored() -> None:
    state = merged(
        (update("crm", consent_email=False), T0 + HOUR), (update("form", consent_email=True), T0)
    )
    assert state.consent_email is False


def test_no_consent_statement_means_no_consent() -> None:
    assert merged((title("crm", "CTO"), T0)).consent_email is False


def test_crm_sync_can_grant_consent_before_any_unsubscribe() -> None:
    assert merged((update("crm", consent_email=True), T0)).consent_email is True


def test_crm_sync_does_not_resubscribe_after_an_unsubscribe() -> None:
    state = merged((update("crm", consent_email=True), T0))
    set_consent(state, False, "unsubscribe", T0 + HOUR)
    assert not apply_update(state, update("crm", consent_email=True), MERGE, T0 + DAY)
    assert state.consent_email is False
    assert state.opted_out


@pytest.mark.parametrize("source", ["form", "identify"])
def test_the_person_can_opt_in_again_after_an_unsubscribe(source: str) -> None:
    state = merged((update("crm", consent_email=True), T0))
    set_consent(state, False, "unsubscribe", T0 + HOUR)
    assert apply_update(state, update(source, consent_email=True), MERGE, T0 + DAY)
    assert state.consent_email is True
    assert not state.opted_out
    # and from then on the CRM's statements count again
    apply_update(state, update("crm", consent_email=False), MERGE, T0 + 2 * DAY)
    apply_update(state, update("crm", consent_email=True), MERGE, T0 + 3 * DAY)
    assert state.consent_email is True


def test_unsubscribe_is_a_change_only_when_consent_was_given() -> None:
    state = ContactState(contact_id=C)
    assert not set_consent(state, False, "unsubscribe", T0)
    assert state.opted_out


def test_form_consent_older_than_the_unsubscribe_does_not_resubscribe() -> None:
    state = merged((update("crm", consent_email=True), T0))
    set_consent(state, False, "unsubscribe", T0 + DAY)
    apply_update(state, update("form", consent_email=True), MERGE, T0 + HOUR)
    assert state.consent_email is False


# -- the published contact -------------------------------------------------------------------------
def test_core_fields_are_published_apart_from_attributes() -> None:
    state = merged(
        (update("crm", crm_status="in_deal", crm_id="0031x", attributes={"title": "CTO"}), T0)
    )
    published = state.published()
    assert published["crm_status"] == "in_deal"
    assert published["crm_id"] == "0031x"
    assert published["attributes"] == {"title": "CTO"}
    assert published["field_sources"] == {"title": "crm", "crm_status": "crm", "crm_id": "crm"}


def test_crm_status_follows_the_merge_policy() -> None:
    state = merged(
        (update("crm", crm_status="customer"), T0), (update("import", crm_status="lead"), T0 + 1)
    )
    assert state.value("crm_status") == "lead"  # default policy is latest


def test_published_contact_has_the_documented_shape() -> None:
    state = merged(
        (update("form", attributes={"title": "CTO"}, consent_email=True, created_at=T0 - DAY), T0)
    )
    assert state.published() == {
        "contact_id": C,
        "email": ANA,
        "attributes": {"title": "CTO"},
        "consent_email": True,
        "crm_status": None,
        "crm_id": None,
        "created_at": from_millis(T0 - DAY),
        "updated_at": from_millis(T0),
        "field_sources": {"title": "form"},
        "deleted": False,
    }


def test_apply_update_reports_no_change_for_a_replayed_update() -> None:
    value = update("crm", attributes={"title": "CTO"}, consent_email=True, created_at=T0 - DAY)
    state = merged((value, T0))
    assert not apply_update(state, value, MERGE, T0)


def test_updated_at_never_moves_back() -> None:
    state = merged(
        (title("crm", "CTO"), T0 + DAY), (update("import", attributes={"city": "X"}), T0)
    )
    assert state.updated_at == T0 + DAY


def test_contact_state_round_trips_through_json() -> None:
    state = merged((update("crm", attributes={"title": "CTO"}, consent_email=True), T0))
    assert ContactState.from_dict(codec.loads(codec.dumps(state.to_dict()))) == state


SOURCES = ["crm", "form", "import", "zapier"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SOURCES),
            st.sampled_from(["CTO", "CEO", "Dev", ""]),
            st.integers(0, 1000),
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda u: u[2],
    ).flatmap(lambda items: st.tuples(st.just(items), st.permutations(items)))
)
def test_priority_merge_is_independent_of_arrival_order(
    orders: tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]],
) -> None:
    original, permuted = orders
    first = merged(*[(title(src, v), T0 + at) for src, v, at in original])
    second = merged(*[(title(src, v), T0 + at) for src, v, at in permuted])
    assert first.value("title") == second.value("title")
    non_empty = [(SOURCES.index(s), -at, v) for s, v, at in original if v]
    expected = min(non_empty)[2] if non_empty else None
    assert first.value("title") == expected
