"""Trigger evaluation: when a rule fires, after which delay, unless what, and how often."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline.clock import from_millis
from pipeline.rules.models import Triggers
from pipeline.trigger import Subject, fire_due, on_event, on_score, trigger_id
from pipeline.trigger.decide import TRIGGER_NAMESPACE, WEB_ACTIVE, next_due
from pipeline.trigger.state import TriggerState
from tests.unit.factories import (
    ANA,
    BEN,
    DAY,
    HOUR,
    MINUTE,
    T0,
    aid,
    contact,
    custom,
    example_rules,
    page_view,
    rules,
)

TRIGGERS = rules(
    """
    triggers:
      frequency_caps:
        email: {max: 2, per: 1d}
      rules:
        - id: pricing-trial-offer
          when: {event: {type: page_view, url: "/pricing*"}}
          delay: 1d
          cancel_if: {type: custom, name: trial_signup}
          channel: email
          requires: [identified, consent_email]
          suppress_if: {crm_status: [in_deal, customer]}
          once_per: 7d
        - id: demo-alert
          when: {event: {type: custom, name: demo_watched}}
          channel: sales
          requires: [identified]
          suppress_if: {crm_status: [customer]}
        - id: welcome
          when: {event: {type: custom, name: signed_up}}
          channel: email
          requires: [identified]
        - id: webinar-invite
          when:
            count: {match: {type: page_view, url: "/blog/marketing/*"}, at_least: 3, within: 7d}
          channel: email
          requires: [identified, consent_email]
          once_per: 30d
        - id: mql-alert
          when: {score_at_least: 50}
          channel: sales
          requires: [identified]
          once_per: 30d
        - id: form-prompt
          when:
            count: {match: {type: page_view, url: "/blog/*/data-driven*"}, at_least: 3, within: 30d}
          channel: web
          requires: [anonymous]
          once_per: 7d
        - id: any-visitor-banner
          when: {event: {type: custom, name: banner}}
          channel: web
    """
).triggers

A, B = contact(ANA), contact(BEN)
COOKIE = aid(1)
ANA_OK = Subject(
    contact_id=A, anonymous_id=None, email=ANA, consent_email=True, attributes={"title": "CMO"}
)
ANONYMOUS = Subject(contact_id=None, anonymous_id=COOKIE)


def only(rule_id: str, triggers: Triggers = TRIGGERS, **changes: Any) -> Triggers:
    """The triggers section with just one rule (optionally changed), caps kept."""
    (rule,) = [r for r in triggers.rules if r.id == rule_id]
    return Triggers(frequency_caps=triggers.frequency_caps, rules=[rule.model_copy(update=changes)])


def fired_rules(outcome: Any) -> list[str]:
    return [m["rule"] for m in outcome.fired]


# -- event match, no delay -------------------------------------------------------------------------
def test_event_match_fires_immediately_when_there_is_no_delay() -> None:
    profile = TriggerState()
    watched = custom("demo_watched", event_id="e-demo")
    outcome = on_event(profile, ANA_OK, watched, TRIGGERS, T0, score=12.3456)
    assert outcome.scheduled == []
    assert outcome.fired == [
        {
            "trigger_id": trigger_id("demo-alert", A, "e-demo"),
            "rule": "demo-alert",
            "channel": "sales",
            "fired_at": from_millis(T0),
            "due_at": from_millis(T0),
            "score": 12.346,
            "cause_event_ids": ["e-demo"],
            "attributes": {"title": "CMO"},
            "contact_id": A,
            "email": ANA,
        }
    ]


def test_event_that_matches_no_rule_does_nothing() -> None:
    profile = TriggerState()
    outcome = on_event(profile, ANA_OK, page_view("/about"), TRIGGERS, T0)
    assert (outcome.fired, outcome.scheduled, outcome.skipped) == ([], [], [])
    assert profile == TriggerState()


def test_web_trigger_message_carries_no_email() -> None:
    outcome = on_event(TriggerState(), ANA_OK, custom("banner"), TRIGGERS, T0)
    (message,) = outcome.fired
    assert message["channel"] == "web"
    assert "email" not in message


def test_firing_records_the_send_for_the_frequency_cap() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, custom("signed_up"), TRIGGERS, T0)
    assert profile.sent == {"email": [T0]}


# -- delay -----------------------------------------------------------------------------------------
def test_delay_schedules_due_at_cause_plus_delay() -> None:
    profile = TriggerState()
    view = page_view("/pricing", T0, event_id="e-view")
    outcome = on_event(profile, ANA_OK, view, TRIGGERS, T0)
    assert outcome.fired == []
    assert outcome.scheduled == [
        {
            "trigger_id": trigger_id("pricing-trial-offer", A, "e-view"),
            "rule": "pricing-trial-offer",
            "cause_at": T0,
            "due_at": T0 + DAY,
            "cause_event_ids": ["e-view"],
        }
    ]
    assert profile.pending == outcome.scheduled
    assert next_due(profile) == T0 + DAY


def test_fire_due_does_not_fire_before_the_due_time() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    outcome = fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY - 1)
    assert outcome.fired == []
    assert len(profile.pending) == 1


def test_fire_due_fires_when_due_and_only_once() -> None:
    profile = TriggerState()
    view = page_view("/pricing", event_id="e-view")
    (scheduled,) = on_event(profile, ANA_OK, view, TRIGGERS, T0).scheduled
    outcome = fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY + 5 * MINUTE)
    (message,) = outcome.fired
    assert message["trigger_id"] == scheduled["trigger_id"]
    assert message["due_at"] == from_millis(T0 + DAY)
    assert message["fired_at"] == from_millis(T0 + DAY + 5 * MINUTE)
    assert message["email"] == ANA
    assert profile.pending == []
    assert next_due(profile) is None
    assert fire_due(profile, ANA_OK, TRIGGERS, T0 + 2 * DAY).fired == []


def test_occurrence_while_scheduled_does_not_schedule_twice() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    outcome = on_event(profile, ANA_OK, page_view("/pricing", T0 + HOUR), TRIGGERS, T0 + HOUR)
    assert outcome.scheduled == []
    assert len(profile.pending) == 1


# -- cancel_if -------------------------------------------------------------------------------------
def test_cancel_event_before_the_due_time_cancels() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    on_event(profile, ANA_OK, custom("trial_signup", T0 + HOUR), TRIGGERS, T0 + HOUR)
    outcome = fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY)
    assert outcome.fired == []
    assert outcome.skipped == [("pricing-trial-offer", "cancel_if")]
    assert profile.pending == []


def test_cancel_event_before_the_cause_prevents_scheduling() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, custom("trial_signup"), TRIGGERS, T0)
    outcome = on_event(profile, ANA_OK, page_view("/pricing", T0 + 3 * DAY), TRIGGERS, T0 + 3 * DAY)
    assert outcome.scheduled == []
    assert outcome.skipped == [("pricing-trial-offer", "cancel_if")]
    assert profile.pending == []


def test_cancel_event_older_than_the_look_back_does_not_prevent_scheduling() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, custom("trial_signup"), TRIGGERS, T0)
    at = T0 + 7 * DAY + 1  # once_per (7d) is the look-back
    assert on_event(profile, ANA_OK, page_view("/pricing", at), TRIGGERS, at).scheduled


def test_cancel_is_seen_even_on_a_subject_the_rule_does_not_apply_to() -> None:
    profile = TriggerState()
    on_event(profile, ANONYMOUS, custom("trial_signup"), TRIGGERS, T0)
    assert profile.cancel_seen == {"pricing-trial-offer": T0}


def test_event_not_matching_cancel_if_does_not_cancel() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    on_event(profile, ANA_OK, custom("newsletter"), TRIGGERS, T0 + HOUR)
    assert fired_rules(fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY)) == ["pricing-trial-offer"]


# -- requires --------------------------------------------------------------------------------------
def test_identified_rule_ignores_anonymous_visitors() -> None:
    profile = TriggerState()
    outcome = on_event(profile, ANONYMOUS, page_view("/pricing"), TRIGGERS, T0)
    assert (outcome.fired, outcome.scheduled, outcome.skipped) == ([], [], [])


def test_anonymous_rule_ignores_identified_contacts() -> None:
    profile = TriggerState()
    for i in range(3):
        outcome = on_event(
            profile, ANA_OK, page_view("/blog/x/data-driven-marketing", T0 + i), TRIGGERS, T0 + i
        )
        assert outcome.fired == []


def test_count_rule_keeps_counting_where_it_does_not_apply() -> None:
    profile = TriggerState()
    for n in range(3):
        outcome = on_event(profile, ANONYMOUS, _blog(T0 + n, n), TRIGGERS, T0 + n)
        assert (outcome.fired, outcome.scheduled, outcome.skipped) == ([], [], [])
    # an identified-only rule: the counter is kept so that a first link can hand it over
    assert [e[1] for e in profile.counts["webinar-invite"]] == ["blog-0", "blog-1", "blog-2"]


def test_rule_without_requirements_applies_to_anyone() -> None:
    assert fired_rules(on_event(TriggerState(), ANONYMOUS, custom("banner"), TRIGGERS, T0)) == [
        "any-visitor-banner"
    ]
    assert fired_rules(on_event(TriggerState(), ANA_OK, custom("banner"), TRIGGERS, T0)) == [
        "any-visitor-banner"
    ]


def test_consent_email_requirement_without_consent_is_skipped() -> None:
    subject = Subject(contact_id=A, anonymous_id=None, email=ANA, consent_email=False)
    outcome = on_event(TriggerState(), subject, page_view("/pricing"), TRIGGERS, T0)
    assert outcome.scheduled == []
    assert outcome.skipped == [("pricing-trial-offer", "no_consent")]


def test_consent_email_requirement_also_holds_for_other_channels() -> None:
    triggers = only("demo-alert", requires=["identified", "consent_email"])
    subject = Subject(contact_id=A, anonymous_id=None, consent_email=False)
    outcome = on_event(TriggerState(), subject, custom("demo_watched"), triggers, T0)
    assert outcome.skipped == [("demo-alert", "no_consent")]


# -- consent and bounces on the email channel ------------------------------------------------------
def test_email_channel_is_blocked_without_consent_even_if_the_rule_does_not_require_it() -> None:
    unsubscribed = Subject(contact_id=A, anonymous_id=None, email=ANA, consent_email=False)
    outcome = on_event(TriggerState(), unsubscribed, custom("signed_up"), TRIGGERS, T0)
    assert outcome.fired == []
    assert outcome.skipped == [("welcome", "no_consent")]


def test_sales_channel_does_not_need_email_consent() -> None:
    subject = Subject(contact_id=A, anonymous_id=None, consent_email=False)
    assert fired_rules(on_event(TriggerState(), subject, custom("demo_watched"), TRIGGERS, T0)) == [
        "demo-alert"
    ]


def test_email_channel_is_blocked_after_a_hard_bounce() -> None:
    bounced = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, email_blocked="hard_bounce"
    )
    outcome = on_event(TriggerState(), bounced, custom("signed_up"), TRIGGERS, T0)
    assert outcome.skipped == [("welcome", "hard_bounce")]


def test_hard_bounce_does_not_block_other_channels() -> None:
    bounced = Subject(
        contact_id=A, anonymous_id=None, consent_email=True, email_blocked="hard_bounce"
    )
    assert on_event(TriggerState(), bounced, custom("demo_watched"), TRIGGERS, T0).fired


def test_consent_withdrawn_before_the_due_time_stops_a_delayed_email() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    unsubscribed = Subject(contact_id=A, anonymous_id=None, email=ANA, consent_email=False)
    outcome = fire_due(profile, unsubscribed, TRIGGERS, T0 + DAY)
    assert outcome.fired == []
    assert outcome.skipped == [("pricing-trial-offer", "no_consent")]
    assert profile.pending == []


def test_hard_bounce_before_the_due_time_stops_a_delayed_email() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    bounced = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, email_blocked="hard_bounce"
    )
    assert fire_due(profile, bounced, TRIGGERS, T0 + DAY).skipped == [
        ("pricing-trial-offer", "hard_bounce")
    ]


# -- suppress_if -----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["in_deal", "customer"])
def test_suppress_if_crm_status_skips_the_trigger(status: str) -> None:
    subject = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, crm_status=status
    )
    outcome = on_event(TriggerState(), subject, page_view("/pricing"), TRIGGERS, T0)
    assert outcome.scheduled == []
    assert outcome.skipped == [("pricing-trial-offer", f"suppressed:{status}")]


@pytest.mark.parametrize("status", [None, "lead", "churned"])
def test_other_crm_statuses_do_not_suppress(status: str | None) -> None:
    subject = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, crm_status=status
    )
    assert on_event(TriggerState(), subject, page_view("/pricing"), TRIGGERS, T0).scheduled


def test_deal_opened_before_the_due_time_suppresses_a_delayed_trigger() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    in_deal = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, crm_status="in_deal"
    )
    assert fire_due(profile, in_deal, TRIGGERS, T0 + DAY).skipped == [
        ("pricing-trial-offer", "suppressed:in_deal")
    ]


# -- frequency caps --------------------------------------------------------------------------------
BURST = rules(
    """
    triggers:
      frequency_caps: {email: {max: 2, per: 1d}}
      rules:
    """
    + "".join(
        f"""
        - id: offer-{i}
          when: {{event: {{type: custom, name: offer-{i}}}}}
          channel: email
          requires: [identified, consent_email]
          once_per: 1h
        """
        for i in range(5)
    )
    + """
        - id: sales-ping
          when: {event: {type: custom}}
          channel: sales
    """
).triggers


def test_frequency_cap_holds_under_a_burst_from_different_rules() -> None:
    profile = TriggerState()
    fired = []
    for i in range(5):
        outcome = on_event(profile, ANA_OK, custom(f"offer-{i}", T0 + i), BURST, T0 + i)
        fired += [m["rule"] for m in outcome.fired if m["channel"] == "email"]
    assert fired == ["offer-0", "offer-1"]
    assert profile.sent["email"] == [T0, T0 + 1]


def test_frequency_cap_reports_skips() -> None:
    profile = TriggerState()
    skipped = []
    for i in range(5):
        skipped += on_event(profile, ANA_OK, custom(f"offer-{i}", T0 + i), BURST, T0 + i).skipped
    assert [s for s in skipped if s[0] != "sales-ping"] == [
        (f"offer-{i}", "frequency_cap") for i in (2, 3, 4)
    ]


def test_frequency_cap_is_per_channel() -> None:
    profile = TriggerState()
    sales = 0
    for i in range(5):
        outcome = on_event(
            profile, ANA_OK, custom(f"offer-{i}", T0 + i * HOUR), BURST, T0 + i * HOUR
        )
        sales += sum(m["channel"] == "sales" for m in outcome.fired)
    assert sales == 1  # once ever, but never held back by the email cap


def test_frequency_cap_window_slides() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, custom("offer-0", T0), BURST, T0)
    on_event(profile, ANA_OK, custom("offer-1", T0 + HOUR), BURST, T0 + HOUR)
    assert on_event(profile, ANA_OK, custom("offer-2", T0 + DAY - 1), BURST, T0 + DAY - 1).skipped
    assert on_event(profile, ANA_OK, custom("offer-3", T0 + DAY), BURST, T0 + DAY).fired


def test_frequency_cap_holds_among_delayed_triggers_due_together() -> None:
    triggers = rules(
        """
        triggers:
          frequency_caps: {email: {max: 2, per: 1d}}
          rules:
        """
        + "".join(
            f"""
            - id: later-{i}
              when: {{event: {{type: custom, name: go}}}}
              delay: 1d
              channel: email
              requires: [identified, consent_email]
            """
            for i in range(4)
        )
    ).triggers
    profile = TriggerState()
    assert len(on_event(profile, ANA_OK, custom("go"), triggers, T0).scheduled) == 4
    outcome = fire_due(profile, ANA_OK, triggers, T0 + DAY)
    assert fired_rules(outcome) == ["later-0", "later-1"]
    assert outcome.skipped == [("later-2", "frequency_cap"), ("later-3", "frequency_cap")]


def test_full_frequency_cap_today_does_not_drop_a_trigger_due_tomorrow() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, custom("offer-0", T0), BURST, T0)
    on_event(profile, ANA_OK, custom("offer-1", T0 + 1), BURST, T0 + 1)
    triggers = Triggers(frequency_caps=BURST.frequency_caps, rules=TRIGGERS.rules)
    outcome = on_event(profile, ANA_OK, page_view("/pricing", T0 + 2), triggers, T0 + 2)
    assert [p["rule"] for p in outcome.scheduled] == ["pricing-trial-offer"]
    assert fired_rules(fire_due(profile, ANA_OK, triggers, T0 + DAY + 2)) == ["pricing-trial-offer"]


# -- once_per --------------------------------------------------------------------------------------
def test_second_occurrence_within_once_per_is_skipped() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY)
    at = T0 + 3 * DAY
    outcome = on_event(profile, ANA_OK, page_view("/pricing", at), TRIGGERS, at)
    assert outcome.scheduled == []
    assert outcome.skipped == [("pricing-trial-offer", "once_per")]


def test_occurrence_after_once_per_fires_again() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    first = fire_due(profile, ANA_OK, TRIGGERS, T0 + DAY).fired
    at = T0 + 7 * DAY
    on_event(profile, ANA_OK, page_view("/pricing", at), TRIGGERS, at)
    second = fire_due(profile, ANA_OK, TRIGGERS, at + DAY).fired
    assert len(first) == len(second) == 1
    assert first[0]["trigger_id"] != second[0]["trigger_id"]


def test_once_per_counts_from_the_occurrence_not_the_send() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    assert profile.fired == {"pricing-trial-offer": T0}


def test_rule_without_once_per_fires_once_ever() -> None:
    profile = TriggerState()
    assert on_event(profile, ANA_OK, custom("demo_watched"), TRIGGERS, T0).fired
    at = T0 + 365 * DAY
    outcome = on_event(profile, ANA_OK, custom("demo_watched", at), TRIGGERS, at)
    assert outcome.fired == []
    assert outcome.skipped == [("demo-alert", "once_per")]


def test_blocked_occurrence_does_not_use_up_once_per() -> None:
    profile = TriggerState()
    in_deal = Subject(
        contact_id=A, anonymous_id=None, email=ANA, consent_email=True, crm_status="in_deal"
    )
    on_event(profile, in_deal, page_view("/pricing"), TRIGGERS, T0)
    at = T0 + HOUR
    assert on_event(profile, ANA_OK, page_view("/pricing", at), TRIGGERS, at).scheduled


# -- score_at_least --------------------------------------------------------------------------------
def test_score_at_least_fires_on_upward_crossing() -> None:
    outcome = on_score(TriggerState(), ANA_OK, 45.0, 55.0, TRIGGERS, T0, "e-cross")
    assert fired_rules(outcome) == ["mql-alert"]
    assert outcome.fired[0]["cause_event_ids"] == ["e-cross"]
    assert outcome.fired[0]["trigger_id"] == trigger_id("mql-alert", A, "e-cross")


def test_score_reaching_the_threshold_exactly_is_a_crossing() -> None:
    assert on_score(TriggerState(), ANA_OK, 49.0, 50.0, TRIGGERS, T0, "e").fired


def test_score_already_above_the_threshold_is_not_a_crossing() -> None:
    assert on_score(TriggerState(), ANA_OK, 60.0, 70.0, TRIGGERS, T0, "e").fired == []


def test_score_falling_through_the_threshold_is_not_a_crossing() -> None:
    assert on_score(TriggerState(), ANA_OK, 60.0, 40.0, TRIGGERS, T0, "e").fired == []


def test_score_wobbling_across_the_threshold_within_once_per_fires_once() -> None:
    profile = TriggerState()
    fired = len(on_score(profile, ANA_OK, 49.0, 51.0, TRIGGERS, T0, "e1").fired)
    for day in range(1, 29):
        after = 49.0 if day % 2 else 51.0
        before = 51.0 if day % 2 else 49.0
        at = T0 + day * DAY
        fired += len(on_score(profile, ANA_OK, before, after, TRIGGERS, at, f"e{day}").fired)
    assert fired == 1


def test_score_crossing_again_after_once_per_fires_again() -> None:
    profile = TriggerState()
    on_score(profile, ANA_OK, 49.0, 51.0, TRIGGERS, T0, "e1")
    at = T0 + 30 * DAY
    assert on_score(profile, ANA_OK, 49.0, 51.0, TRIGGERS, at, "e2").fired


def test_score_crossing_without_an_event_has_a_deterministic_cause() -> None:
    outcome = on_score(TriggerState(), ANA_OK, 0.0, 60.0, TRIGGERS, T0, None)
    assert outcome.fired[0]["cause_event_ids"] == [f"score@{T0}"]


def test_score_rule_requiring_identified_ignores_anonymous_visitors() -> None:
    assert on_score(TriggerState(), ANONYMOUS, 0.0, 60.0, TRIGGERS, T0, "e").fired == []


# -- count conditions ------------------------------------------------------------------------------
def _blog(at: int, n: int) -> dict[str, Any]:
    return page_view(f"/blog/marketing/post-{n}", at, event_id=f"blog-{n}")


def test_count_fires_on_the_third_matching_event_within_the_window() -> None:
    profile = TriggerState()
    results = [
        on_event(profile, ANA_OK, _blog(T0 + n * DAY, n), TRIGGERS, T0 + n * DAY) for n in range(3)
    ]
    assert [fired_rules(r) for r in results] == [[], [], ["webinar-invite"]]
    assert results[2].fired[0]["cause_event_ids"] == ["blog-0", "blog-1", "blog-2"]


def test_count_spread_wider_than_the_window_does_not_fire() -> None:
    profile = TriggerState()
    fired = []
    for n, day in enumerate([0, 4, 8, 12, 16]):
        fired += on_event(profile, ANA_OK, _blog(T0 + day * DAY, n), TRIGGERS, T0 + day * DAY).fired
    assert fired == []


def test_count_window_excludes_an_event_exactly_one_window_old() -> None:
    profile = TriggerState()
    for n, at in enumerate([T0, T0 + DAY, T0 + 7 * DAY]):
        outcome = on_event(profile, ANA_OK, _blog(at, n), TRIGGERS, at)
    assert outcome.fired == []


def test_count_ignores_a_duplicate_event() -> None:
    profile = TriggerState()
    blog = _blog(T0, 0)
    for i in range(3):
        outcome = on_event(profile, ANA_OK, blog, TRIGGERS, T0 + i)
    assert outcome.fired == []
    assert profile.counts["webinar-invite"] == [[T0, "blog-0"]]


def test_count_ignores_non_matching_events() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, _blog(T0, 0), TRIGGERS, T0)
    on_event(profile, ANA_OK, page_view("/blog/sales/x", T0 + 1), TRIGGERS, T0 + 1)
    outcome = on_event(profile, ANA_OK, _blog(T0 + 2, 2), TRIGGERS, T0 + 2)
    assert outcome.fired == []


def test_count_fourth_event_within_once_per_does_not_fire_again() -> None:
    profile = TriggerState()
    for n in range(4):
        outcome = on_event(profile, ANA_OK, _blog(T0 + n, n), TRIGGERS, T0 + n)
    assert outcome.skipped == [("webinar-invite", "once_per")]


def test_count_late_event_inside_the_window_counts() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, _blog(T0 + 2 * DAY, 2), TRIGGERS, T0 + 2 * DAY)
    on_event(profile, ANA_OK, _blog(T0 + 3 * DAY, 3), TRIGGERS, T0 + 3 * DAY)
    outcome = on_event(profile, ANA_OK, _blog(T0 + DAY, 1), TRIGGERS, T0 + DAY)
    assert fired_rules(outcome) == ["webinar-invite"]


# -- anonymous web triggers ------------------------------------------------------------------------
def test_anonymous_web_trigger_records_an_active_web_entry() -> None:
    profile = TriggerState()
    for n in range(3):
        at = T0 + n * HOUR
        article = page_view("/blog/analytics/data-driven-marketing", at, event_id=f"read-{n}")
        outcome = on_event(profile, ANONYMOUS, article, TRIGGERS, at)
    (message,) = outcome.fired
    assert message["anonymous_id"] == COOKIE
    assert "contact_id" not in message
    assert message["trigger_id"] == trigger_id("form-prompt", f"aid:{COOKIE}", "read-2")
    assert profile.web == [
        {
            "rule": "form-prompt",
            "trigger_id": message["trigger_id"],
            "until": T0 + 2 * HOUR + 7 * DAY,
        }
    ]


def test_web_trigger_without_once_per_stays_active_for_a_day() -> None:
    profile = TriggerState()
    on_event(profile, ANONYMOUS, custom("banner"), TRIGGERS, T0)
    assert profile.web[0]["until"] == T0 + int(WEB_ACTIVE.total_seconds() * 1000)


def test_refired_web_trigger_replaces_its_entry_and_expired_ones_go() -> None:
    profile = TriggerState(
        web=[
            {"rule": "old", "trigger_id": "t0", "until": T0 - 1},
            {"rule": "form-prompt", "trigger_id": "t1", "until": T0 + DAY},
        ]
    )
    on_event(profile, ANONYMOUS, custom("banner"), TRIGGERS, T0)
    assert [w["rule"] for w in profile.web] == ["form-prompt", "any-visitor-banner"]


# -- deterministic ids -----------------------------------------------------------------------------
def _run(subject: Subject) -> list[str]:
    profile = TriggerState()
    ids = []
    events = [
        page_view("/pricing", T0, event_id="e1"),
        custom("demo_watched", T0 + 1, event_id="e2"),
        custom("banner", T0 + 2, event_id="e3"),
    ]
    for e in events:
        ids += [m["trigger_id"] for m in on_event(profile, subject, e, TRIGGERS, T0).fired]
    ids += [m["trigger_id"] for m in fire_due(profile, subject, TRIGGERS, T0 + DAY).fired]
    return ids


def test_same_input_twice_gives_the_same_trigger_ids() -> None:
    assert _run(ANA_OK) == _run(ANA_OK)
    assert len(_run(ANA_OK)) == 3


def test_different_subject_gives_different_trigger_ids() -> None:
    ben = Subject(contact_id=B, anonymous_id=None, email=BEN, consent_email=True)
    assert set(_run(ANA_OK)).isdisjoint(_run(ben))


def test_anonymous_and_contact_subjects_never_share_trigger_ids() -> None:
    assert trigger_id("r", A, "e") != trigger_id("r", f"aid:{A}", "e")


def test_trigger_id_is_uuid5_of_rule_subject_and_cause() -> None:
    expected = str(uuid.uuid5(TRIGGER_NAMESPACE, f"rule|{A}|e1"))
    assert trigger_id("rule", A, "e1") == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [(("r1", "s", "e"), ("r2", "s", "e")), (("r", "s", "e1"), ("r", "s", "e2"))],
)
def test_trigger_ids_differ_by_rule_and_occurrence(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    assert trigger_id(*a) != trigger_id(*b)


# -- fire_due housekeeping -------------------------------------------------------------------------
def test_pending_trigger_of_a_removed_rule_is_dropped() -> None:
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing"), TRIGGERS, T0)
    outcome = fire_due(profile, ANA_OK, only("demo-alert"), T0 + DAY)
    assert outcome.skipped == [("pricing-trial-offer", "rule_removed")]
    assert profile.pending == []


def test_fire_due_on_an_empty_profile_does_nothing() -> None:
    profile = TriggerState()
    outcome = fire_due(profile, ANA_OK, TRIGGERS, T0)
    assert (outcome.fired, outcome.skipped, profile) == ([], [], TriggerState())


def test_fire_due_keeps_triggers_not_yet_due() -> None:
    triggers = only("pricing-trial-offer")
    profile = TriggerState(
        pending=[
            {
                "trigger_id": "t1",
                "rule": "pricing-trial-offer",
                "cause_at": T0,
                "due_at": T0 + DAY,
                "cause_event_ids": ["e1"],
            },
            {
                "trigger_id": "t2",
                "rule": "pricing-trial-offer",
                "cause_at": T0,
                "due_at": T0 + 2 * DAY,
                "cause_event_ids": ["e2"],
            },
        ]
    )
    assert [m["trigger_id"] for m in fire_due(profile, ANA_OK, triggers, T0 + DAY).fired] == ["t1"]
    assert [p["trigger_id"] for p in profile.pending] == ["t2"]
    assert next_due(profile) == T0 + 2 * DAY


def test_shipped_rules_offer_a_trial_the_day_after_a_pricing_view() -> None:
    triggers = example_rules().triggers
    profile = TriggerState()
    on_event(profile, ANA_OK, page_view("/pricing/enterprise", event_id="e1"), triggers, T0)
    on_event(
        profile, ANA_OK, page_view("/products/widget", T0 + 1, event_id="e2"), triggers, T0 + 1
    )
    outcome = fire_due(profile, ANA_OK, triggers, T0 + DAY + 1)
    assert fired_rules(outcome) == ["pricing-trial-offer", "product-sample-offer"]
