"""Lead scoring over a profile: points, caps, decay, lifecycle, attribute rules and absorb."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import codec
from pipeline.rules.models import Scoring
from pipeline.score import Profile, ScoreDelta, absorb, score_attributes, score_event
from pipeline.score.profile import MAX_SEEN, stage_for
from tests.unit.factories import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    click,
    custom,
    event,
    example_rules,
    form,
    page_view,
    rules,
)

SCORING = rules(
    """
    scoring:
      half_life: 30d
      lifecycle: {mql: 50, sql: 100}
      rules:
        - {id: pricing-view, match: {type: page_view, url: "/pricing*"}, points: 10,
           cap: {max: 3, per: 1d}}
        - {id: product-view, match: {type: page_view, url: "/products/*"}, points: 3}
        - {id: careers-view, match: {type: page_view, url: "/careers*"}, points: -10}
        - {id: whole-url, match: {url: "https://shop.acme.example/*"}, points: 2}
        - {id: trial-signup, match: {type: custom, name: trial_signup}, points: 30}
        - {id: demo-request, match: {type: form_submit, form_id: demo-request}, points: 40}
        - {id: ebook, match: {type: form_submit, form_id: [whitepaper, ebook]}, points: 15}
        - {id: spring-click, match: {type: email_click, campaign: spring-sale}, points: 5}
        - {id: any-click, match: {type: email_click}, points: 1}
      attributes:
        - {id: manager-title, field: title, contains: manager, points: 10}
        - {id: marketing-dept, field: department, equals: marketing, points: 5}
        - {id: big-industry, field: industry, in: [banking, insurance], points: 7}
    """
).scoring
NO_DECAY = Scoring.model_validate({**SCORING.model_dump(by_alias=True), "half_life": None})


def score(events: list[tuple[dict[str, Any], int]], scoring: Scoring = SCORING) -> Profile:
    profile = Profile()
    for event_, at in events:
        score_event(profile, event_, scoring, at)
    return profile


# -- points per rule -------------------------------------------------------------------------------
def test_matching_rule_adds_its_points() -> None:
    profile = Profile()
    pricing = page_view("/pricing", T0)
    deltas = score_event(profile, pricing, SCORING, T0)
    assert deltas == [ScoreDelta("pricing-view", 10, pricing["event_id"], 10.0, "lead")]
    assert profile.score == 10.0
    assert profile.as_of == T0


def test_event_matching_no_rule_changes_nothing() -> None:
    profile = Profile()
    assert score_event(profile, page_view("/about", T0), SCORING, T0) == []
    assert profile == Profile()


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/pricing", "pricing-view"),
        ("/pricing/", "pricing-view"),
        ("/pricing/enterprise", "pricing-view"),
        ("/pricing-2026", "pricing-view"),
        ("/products/widget", "product-view"),
        ("/products/widgets/blue", "product-view"),
        ("/careers", "careers-view"),
        ("/careers/engineering", "careers-view"),
    ],
)
def test_url_glob_matches_the_path(path: str, rule: str) -> None:
    assert [d.rule for d in score_event(Profile(), page_view(path), SCORING, T0)] == [rule]


@pytest.mark.parametrize("path", ["/blog/pricing", "/products", "/Pricing", "/", "/en/pricing"])
def test_url_glob_does_not_match_other_paths(path: str) -> None:
    assert score_event(Profile(), page_view(path), SCORING, T0) == []


def test_glob_starting_with_http_matches_the_whole_url() -> None:
    shop = event("page_view", url="https://shop.acme.example/cart", path="/cart")
    assert [d.rule for d in score_event(Profile(), shop, SCORING, T0)] == ["whole-url"]


def test_negative_points_lower_the_score() -> None:
    profile = score([(page_view("/pricing"), T0), (page_view("/careers"), T0 + 1)])
    assert profile.score == 0.0


def test_negative_points_can_take_the_score_below_zero() -> None:
    assert score([(page_view("/careers"), T0)]).score == -10.0


def test_custom_event_scores_by_name() -> None:
    assert score([(custom("trial_signup"), T0)]).score == 30.0
    assert score([(custom("newsletter_signup"), T0)]).score == 0.0


@pytest.mark.parametrize(
    ("form_id", "points"),
    [("demo-request", 40), ("whitepaper", 15), ("ebook", 15), ("contact-us", 0)],
)
def test_form_scores_by_form_id(form_id: str, points: float) -> None:
    assert score([(form("ana.lopez@acme.io", form_id=form_id), T0)]).score == points


def test_form_without_form_id_matches_no_form_id_rule() -> None:
    assert score([(form("ana.lopez@acme.io"), T0)]).score == 0.0


def test_campaign_rule_matches_only_its_campaign() -> None:
    spring = click("c1", campaign_id="spring-sale")
    autumn = click("c1", campaign_id="autumn")
    assert [d.rule for d in score_event(Profile(), spring, SCORING, T0)] == [
        "spring-click",
        "any-click",
    ]
    assert [d.rule for d in score_event(Profile(), autumn, SCORING, T0)] == ["any-click"]


def test_event_matching_several_rules_earns_each_in_rule_order() -> None:
    profile = Profile()
    deltas = score_event(profile, click("c1", campaign_id="spring-sale"), SCORING, T0)
    assert [(d.rule, d.delta, d.score) for d in deltas] == [
        ("spring-click", 5, 5.0),
        ("any-click", 1, 6.0),
    ]


def test_delta_reports_the_event_id() -> None:
    view = page_view("/pricing", event_id="0b7c6a2e-1d1e-4a38-9c55-8b1f9f1c3a01")
    (delta,) = score_event(Profile(), view, SCORING, T0)
    assert delta.event_id == "0b7c6a2e-1d1e-4a38-9c55-8b1f9f1c3a01"


# -- caps ------------------------------------------------------------------------------------------
def test_at_most_three_pricing_views_a_day_count() -> None:
    profile = Profile()
    counted = [
        score_event(profile, page_view("/pricing"), NO_DECAY, T0 + i * HOUR) for i in range(5)
    ]
    assert [len(d) for d in counted] == [1, 1, 1, 0, 0]
    assert profile.score == 30.0


def test_pricing_views_count_again_the_next_day() -> None:
    profile = Profile()
    for day in range(3):
        for i in range(5):
            score_event(profile, page_view("/pricing"), NO_DECAY, T0 + day * DAY + i * HOUR)
    assert profile.score == 90.0


def test_cap_windows_are_calendar_days_in_utc() -> None:
    profile = Profile()
    for i in range(3):
        score_event(profile, page_view("/pricing"), NO_DECAY, T0 + DAY - 3 * MINUTE + i)
    # a minute after midnight is a new window, though only minutes after the last three
    assert score_event(profile, page_view("/pricing"), NO_DECAY, T0 + DAY + MINUTE)


def test_cap_is_per_rule() -> None:
    profile = Profile()
    for i in range(4):
        score_event(profile, page_view("/pricing"), NO_DECAY, T0 + i)
    assert score_event(profile, page_view("/products/a"), NO_DECAY, T0 + 10)
    assert profile.score == 33.0


def test_rule_without_cap_counts_every_event() -> None:
    profile = score([(page_view("/products/a"), T0 + i) for i in range(20)], NO_DECAY)
    assert profile.score == 60.0
    assert "product-view" not in profile.caps


def test_the_shipped_pricing_rule_is_capped_at_three_a_day() -> None:
    scoring = example_rules().scoring
    profile = Profile()
    for i in range(5):
        score_event(profile, page_view("/pricing"), scoring, T0 + i * MINUTE)
    assert profile.score == pytest.approx(30.0, abs=1e-3)


def test_late_event_from_an_earlier_window_respects_that_windows_cap() -> None:
    late = score(
        [(page_view("/pricing"), at) for at in (T0, T0 + 1, T0 + 2, T0 + DAY, T0 + 3)], NO_DECAY
    )
    assert late.score == 40.0


# -- decay -----------------------------------------------------------------------------------------
def test_score_decays_on_update() -> None:
    profile = score([(page_view("/pricing"), T0), (page_view("/pricing"), T0 + 30 * DAY)])
    assert profile.score == pytest.approx(15.0)
    assert profile.as_of == T0 + 30 * DAY


def test_score_decays_on_read_without_changing_the_stored_value() -> None:
    profile = score([(custom("trial_signup"), T0)])
    assert profile.score_at(T0 + 30 * DAY, SCORING.half_life) == pytest.approx(15.0)
    assert profile.score_at(T0 + 60 * DAY, SCORING.half_life) == pytest.approx(7.5)
    assert profile.score == 30.0


def test_score_does_not_decay_without_a_half_life() -> None:
    profile = score([(custom("trial_signup"), T0)], NO_DECAY)
    assert profile.score_at(T0 + 365 * DAY, NO_DECAY.half_life) == 30.0


def test_empty_profile_reads_zero() -> None:
    assert Profile().score_at(T0, SCORING.half_life) == 0.0


def test_late_event_adds_its_decayed_contribution() -> None:
    profile = score([(custom("trial_signup"), T0 + 30 * DAY), (custom("trial_signup"), T0)])
    assert profile.as_of == T0 + 30 * DAY
    assert profile.score == pytest.approx(30 + 15)


def test_late_event_gives_the_same_score_as_in_order() -> None:
    in_order = score([(page_view("/products/a"), T0), (custom("trial_signup"), T0 + 10 * DAY)])
    late = score([(custom("trial_signup"), T0 + 10 * DAY), (page_view("/products/a"), T0)])
    at = T0 + 40 * DAY
    assert late.score_at(at, SCORING.half_life) == pytest.approx(
        in_order.score_at(at, SCORING.half_life), abs=1e-5
    )


UNCAPPED = [
    lambda: page_view("/products/x"),
    lambda: page_view("/careers"),
    lambda: custom("trial_signup"),
    lambda: form("ana.lopez@acme.io", form_id="ebook"),
    lambda: click("c1", campaign_id="spring-sale"),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(UNCAPPED) - 1), st.integers(0, 120 * DAY)),
        min_size=1,
        max_size=12,
    ).flatmap(lambda items: st.tuples(st.just(items), st.permutations(items)))
)
def test_score_is_independent_of_arrival_order(
    orders: tuple[list[tuple[int, int]], list[tuple[int, int]]],
) -> None:
    original, permuted = orders
    end = T0 + 121 * DAY
    first = score([(UNCAPPED[kind](), T0 + offset) for kind, offset in original])
    second = score([(UNCAPPED[kind](), T0 + offset) for kind, offset in permuted])
    assert first.score_at(end, SCORING.half_life) == pytest.approx(
        second.score_at(end, SCORING.half_life), abs=1e-4
    )


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(6))))
def test_capped_rule_counts_the_same_number_in_any_order_within_one_window(
    order: list[int],
) -> None:
    profile = score([(page_view("/pricing"), T0 + HOUR * i) for i in order], NO_DECAY)
    assert profile.score == 30.0


# -- lifecycle -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("points", "stage"),
    [(0, "lead"), (49.99, "lead"), (50, "mql"), (99.9, "mql"), (100, "sql"), (500, "sql")],
)
def test_stage_for_thresholds(points: float, stage: str) -> None:
    assert stage_for(points, SCORING.lifecycle, "lead") == stage


@pytest.mark.parametrize("current", ["mql", "sql"])
def test_stage_for_never_moves_back(current: str) -> None:
    assert stage_for(0, SCORING.lifecycle, current) == current


def test_lifecycle_moves_lead_to_mql_to_sql_at_thresholds() -> None:
    profile = Profile()
    trial = custom("trial_signup")
    ebook = form("a@acme.io", form_id="ebook")
    demo = form("a@acme.io", form_id="demo-request")
    stages = []
    for i, event_ in enumerate([trial, ebook, demo, {**demo, "event_id": "again"}]):
        (delta,) = score_event(profile, event_, NO_DECAY, T0 + i)
        stages.append((delta.score, delta.stage))
    assert stages == [(30, "lead"), (45, "lead"), (85, "mql"), (125, "sql")]


def test_lifecycle_can_jump_straight_to_sql() -> None:
    profile = Profile(score=90.0, as_of=T0)
    score_event(profile, custom("trial_signup"), NO_DECAY, T0 + 1)
    assert profile.stage == "sql"


def test_lifecycle_never_moves_back_when_the_score_decays() -> None:
    profile = score([(form("a@acme.io", form_id="demo-request"), T0), (custom("trial_signup"), T0)])
    assert profile.stage == "mql"
    score_event(profile, page_view("/products/a"), SCORING, T0 + 365 * DAY)
    assert profile.score < 50
    assert profile.stage == "mql"


def test_lifecycle_never_moves_back_on_negative_points() -> None:
    profile = score([(form("a@acme.io", form_id="demo-request"), T0), (custom("trial_signup"), T0)])
    for i in range(8):
        score_event(profile, page_view("/careers"), SCORING, T0 + i)
    assert profile.score < 0
    assert profile.stage == "mql"


# -- attribute rules -------------------------------------------------------------------------------
def test_attribute_rule_grants_its_points_when_the_condition_holds() -> None:
    profile = Profile()
    deltas = score_attributes(profile, {"title": "Marketing Manager"}, SCORING, T0)
    assert deltas == [ScoreDelta("manager-title", 10, None, 10.0, "lead")]
    assert profile.attribute_points == {"manager-title": 10}


def test_attribute_rule_grants_once_while_the_condition_holds() -> None:
    profile = Profile()
    score_attributes(profile, {"title": "Marketing Manager"}, SCORING, T0)
    assert score_attributes(profile, {"title": "Marketing Manager"}, SCORING, T0 + 1) == []
    assert score_attributes(profile, {"title": "Sales Manager"}, SCORING, T0 + 2) == []
    assert profile.score == 10.0


def test_attribute_rule_is_withdrawn_when_the_condition_stops() -> None:
    profile = Profile()
    score_attributes(profile, {"title": "Manager"}, SCORING, T0)
    deltas = score_attributes(profile, {"title": "Developer"}, SCORING, T0 + 1)
    assert [(d.rule, d.delta) for d in deltas] == [("manager-title", pytest.approx(-10))]
    assert profile.score == pytest.approx(0.0, abs=1e-5)
    assert profile.attribute_points == {}


def test_attribute_rule_is_withdrawn_when_the_field_disappears() -> None:
    profile = Profile()
    score_attributes(profile, {"title": "Manager"}, NO_DECAY, T0)
    assert [d.delta for d in score_attributes(profile, {}, NO_DECAY, T0 + 1)] == [-10]


def test_withdrawing_a_decayed_grant_never_takes_the_score_below_zero() -> None:
    profile = Profile()
    score_attributes(profile, {"title": "Manager"}, SCORING, T0)
    (delta,) = score_attributes(profile, {"title": "Developer"}, SCORING, T0 + 30 * DAY)
    assert delta.delta == pytest.approx(-5.0)
    assert profile.score_at(T0 + 30 * DAY, SCORING.half_life) == pytest.approx(0.0, abs=1e-5)


def test_attribute_rule_can_be_granted_again_after_withdrawal() -> None:
    profile = Profile()
    score_attributes(profile, {"title": "Manager"}, NO_DECAY, T0)
    score_attributes(profile, {"title": "Developer"}, NO_DECAY, T0 + 1)
    score_attributes(profile, {"title": "Manager"}, NO_DECAY, T0 + 2)
    assert profile.score == 10.0


@pytest.mark.parametrize(
    ("attributes", "rules_granted"),
    [
        ({"title": "GENERAL MANAGER"}, ["manager-title"]),
        ({"title": "management"}, []),
        ({"department": "Marketing"}, ["marketing-dept"]),
        ({"department": " marketing "}, ["marketing-dept"]),
        ({"department": "marketing ops"}, []),
        ({"industry": "Banking"}, ["big-industry"]),
        ({"industry": "retail"}, []),
        ({"title": ""}, []),
        ({"title": None}, []),
        (
            {"title": "Manager", "department": "marketing", "industry": "insurance"},
            ["manager-title", "marketing-dept", "big-industry"],
        ),
    ],
)
def test_attribute_conditions(attributes: dict[str, Any], rules_granted: list[str]) -> None:
    deltas = score_attributes(Profile(), attributes, SCORING, T0)
    assert [d.rule for d in deltas] == rules_granted


def test_attribute_equals_compares_numbers_as_text() -> None:
    scoring = rules(
        "scoring: {attributes: [{id: big, field: employees, equals: 500, points: 5}]}"
    ).scoring
    assert score_attributes(Profile(), {"employees": "500"}, scoring, T0)
    assert score_attributes(Profile(), {"employees": 500}, scoring, T0)


# -- absorb ----------------------------------------------------------------------------------------
def test_absorb_moves_the_decayed_anonymous_score_into_the_contact() -> None:
    anonymous = score([(custom("trial_signup"), T0)])
    contact = score([(form("a@acme.io", form_id="ebook"), T0 + 30 * DAY)])
    delta = absorb(contact, anonymous, SCORING, T0 + 30 * DAY, "e-link")
    assert delta == ScoreDelta("anonymous_history", 15.0, "e-link", 30.0, "lead")
    assert contact.score == pytest.approx(30.0)


def test_absorb_can_cross_a_lifecycle_threshold() -> None:
    anonymous = score([(form("a@acme.io", form_id="demo-request"), T0)], NO_DECAY)
    contact = score([(form("a@acme.io", form_id="ebook"), T0)], NO_DECAY)
    delta = absorb(contact, anonymous, NO_DECAY, T0 + 1, None)
    assert delta is not None
    assert delta.stage == "mql"


def test_absorb_of_a_negative_history_lowers_the_score() -> None:
    anonymous = score([(page_view("/careers"), T0)], NO_DECAY)
    contact = Profile()
    delta = absorb(contact, anonymous, NO_DECAY, T0, None)
    assert delta is not None
    assert contact.score == -10.0


def test_absorb_of_an_empty_history_adds_no_score() -> None:
    contact = score([(custom("trial_signup"), T0)])
    assert absorb(contact, Profile(), SCORING, T0 + 1, "e1") is None
    assert contact.score == 30.0


def test_absorb_adds_same_window_cap_counts() -> None:
    anonymous = score([(page_view("/pricing"), T0 + i) for i in range(2)], NO_DECAY)
    contact = score([(page_view("/pricing"), T0 + 10)], NO_DECAY)
    absorb(contact, anonymous, NO_DECAY, T0 + 20, None)
    assert contact.score == 30.0
    assert score_event(contact, page_view("/pricing"), NO_DECAY, T0 + 30) == []


def test_absorb_keeps_each_cap_window() -> None:
    anonymous = score([(page_view("/pricing"), T0 + i) for i in range(3)], NO_DECAY)
    contact = score([(page_view("/pricing"), T0 + DAY)], NO_DECAY)
    absorb(contact, anonymous, NO_DECAY, T0 + DAY + 1, None)
    windows = contact.caps["pricing-view"]
    assert {int(w): len(e) for w, e in windows.items()} == {T0 // DAY: 3, (T0 + DAY) // DAY: 1}
    assert contact.score == 40.0


def test_absorb_into_a_full_window_keeps_the_earliest_events() -> None:
    anonymous = score([(page_view("/pricing"), T0 + 10 + i) for i in range(3)], NO_DECAY)
    contact = score([(page_view("/pricing"), T0 + i) for i in range(2)], NO_DECAY)
    absorb(contact, anonymous, NO_DECAY, T0 + 20, None)
    [counted] = contact.caps["pricing-view"].values()
    assert [at for at, _ in counted] == [T0, T0 + 1, T0 + 10]
    assert contact.score == 30.0  # at most 3 pricing views a day count, before and after


def test_capped_score_does_not_depend_on_arrival_order() -> None:
    views = [(page_view("/pricing"), T0 + i * MINUTE) for i in range(7)]
    forward = score(views)
    backward = score(list(reversed(views)))
    later = T0 + DAY
    assert forward.score_at(later, SCORING.half_life) == pytest.approx(
        backward.score_at(later, SCORING.half_life), abs=1e-6
    )


# -- state -----------------------------------------------------------------------------------------
def test_remember_detects_a_duplicate_event_id() -> None:
    profile = Profile()
    assert profile.remember("e1")
    assert not profile.remember("e1")
    assert profile.remember("e2")


def test_remember_keeps_a_bounded_number_of_recent_ids() -> None:
    profile = Profile()
    for i in range(MAX_SEEN + 10):
        profile.remember(f"e{i}")
    assert len(profile.seen) == MAX_SEEN
    assert profile.seen[0] == "e10"
    assert profile.remember("e0")  # forgotten


def test_profile_round_trips_through_json() -> None:
    profile = score([(page_view("/pricing"), T0), (custom("trial_signup"), T0 + DAY)])
    score_attributes(profile, {"title": "manager"}, SCORING, T0 + DAY)
    profile.remember("e1")
    again = Profile.from_dict(codec.loads(codec.dumps(profile.to_dict())))
    assert again == profile


def test_profile_from_dict_ignores_unknown_fields_and_fills_missing_ones() -> None:
    assert Profile.from_dict({"score": 5.0, "as_of": T0, "retired_field": 1}) == Profile(
        score=5.0, as_of=T0
    )


@pytest.mark.parametrize("data", [None, {}])
def test_missing_profile_is_empty(data: dict[str, Any] | None) -> None:
    assert Profile.from_dict(data) == Profile()
