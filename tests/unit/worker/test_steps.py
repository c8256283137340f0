"""The worker's two stages as pure functions: stage 1 (cookies) and stage 2 (contacts)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import codec
from pipeline.clock import from_millis
from pipeline.contacts import ContactState, apply_update
from pipeline.rules import Rules
from pipeline.rules.models import Identity
from pipeline.topics import DECISIONS
from pipeline.trigger.decide import trigger_id
from pipeline.worker.steps import (
    ANONYMOUS_EVENTS,
    CONTACT_WORK,
    COOKIE_COMMANDS,
    ContactRecord,
    CookieRecord,
    Counters,
    Out,
    check_event,
    check_update,
    contact_step,
    cookie_command,
    cookie_step,
    due_step,
    event_time,
)
from tests.unit.factories import (
    ANA,
    BEN,
    DAY,
    HOUR,
    MINUTE,
    T0,
    aid,
    click,
    contact,
    custom,
    event,
    example_rules,
    form,
    identify,
    page_view,
    rules,
)
from tests.unit.worker.harness import Pipeline, roundtrip

RULES = example_rules()
A, B = contact(ANA), contact(BEN)
COOKIE = aid(1)


def with_identity(**changes: Any) -> Rules:
    return RULES.model_copy(update={"identity": Identity(**changes)})


def shape(outs: list[Out]) -> list[tuple[str, str | None, str | None]]:
    """(topic, key, contact-work kind) of each record."""
    return [
        (
            o.topic,
            o.key,
            (o.value or {}).get("k") if o.topic in (CONTACT_WORK, ANONYMOUS_EVENTS) else None,
        )
        for o in outs
    ]


def consented(contact_id: str = A, email: str = ANA, **fields: Any) -> ContactRecord:
    record = ContactRecord(ContactState(contact_id=contact_id))
    apply_update(
        record.contact,
        {"source": "crm", "email": email, "consent_email": True, **fields},
        RULES.merge,
        T0 - DAY,
    )
    return record


# -- stage 1: anonymous visitors -------------------------------------------------------------------
def test_anonymous_visitor_is_scored_under_its_cookie() -> None:
    record = CookieRecord()
    view = page_view("/pricing", T0, anonymous_id=COOKIE)
    outs = cookie_step(record, view, RULES)
    assert shape(outs) == [("scores", COOKIE, None), (ANONYMOUS_EVENTS, COOKIE, "event")]
    assert outs[0].value == {
        "contact_id": None,
        "anonymous_id": COOKIE,
        "score": 10.0,
        "delta": 10.0,
        "rule": "pricing-view",
        "event_id": view["event_id"],
        "lifecycle_stage": "lead",
        "at": from_millis(T0),
    }
    assert record.profile.score == 10.0


@pytest.mark.parametrize(
    ("email", "refused"),
    [
        ("test@test.com", "invalid email: placeholder address"),
        ("not an email", "invalid email: "),
        (ANA, None),  # evidence: linked, nothing refused
    ],
)
def test_a_form_not_taken_as_evidence_says_why_on_its_event(
    email: str, refused: str | None
) -> None:
    """The event is kept (CONTRACT §3) and carries why its email linked no one: what the
    console's contact page shows beside it (``events.identity_refused``)."""
    counters = Counters()
    outs = cookie_step(CookieRecord(), form(email, anonymous_id=COOKIE), RULES, counters)
    forwarded = [o.value["e"] for o in outs if o.value and o.value.get("k") == "event"]
    assert len(forwarded) == 1
    if refused is None:
        assert "identity_refused" not in forwarded[0]
        assert forwarded[0]["contact_id"] == A
    else:
        assert forwarded[0]["identity_refused"].startswith(refused)
        assert forwarded[0]["contact_id"] is None
        assert counters.values["identity_refused"] == 1


def test_a_kiosk_cookies_later_forms_say_it_is_flagged() -> None:
    record = CookieRecord()
    record.cookie.flagged = True  # re-linked too often earlier (a kiosk)
    outs = cookie_step(record, form(BEN, anonymous_id=COOKIE), RULES)
    (event_,) = [o.value["e"] for o in outs if o.value and o.value.get("k") == "event"]
    assert event_["identity_refused"] == "cookie_flagged"
    assert event_["contact_id"] == B  # it still counts for the person it names


def test_anonymous_event_goes_to_the_sink_unresolved_and_pre_identification() -> None:
    view = page_view("/about", T0, anonymous_id=COOKIE)
    (out,) = cookie_step(CookieRecord(), view, RULES)
    assert out == Out(
        ANONYMOUS_EVENTS,
        COOKIE,
        {"k": "event", "e": {**view, "contact_id": None, "pre_identification": True}},
    )


def test_anonymous_trigger_fires_under_the_cookie() -> None:
    record = CookieRecord()
    outs: list[Out] = []
    for n in range(3):
        at = T0 + n * HOUR
        read = page_view("/blog/analytics/data-driven-marketing", at, anonymous_id=COOKIE)
        outs += cookie_step(record, read, RULES)
    (trigger,) = [o for o in outs if o.topic == "triggers"]
    assert trigger.key == COOKIE
    assert trigger.value is not None
    assert trigger.value["rule"] == "whitepaper-form-prompt"
    assert trigger.value["anonymous_id"] == COOKIE
    assert [w["rule"] for w in record.triggers.web] == ["whitepaper-form-prompt"]


def test_delayed_anonymous_trigger_fires_from_due_step() -> None:
    anon_rules = rules(
        """
        triggers:
          rules:
            - {id: come-back, when: {event: {type: page_view, url: "/pricing*"}}, delay: 1h,
               channel: web, requires: [anonymous]}
        """
    )
    record = CookieRecord()
    cookie_step(record, page_view("/pricing", T0, anonymous_id=COOKIE), anon_rules)
    assert due_step(record, anon_rules, T0 + HOUR - 1, anonymous_id=COOKIE) == []
    (out,) = due_step(record, anon_rules, T0 + HOUR, anonymous_id=COOKIE)
    assert (out.topic, out.key) == ("triggers", COOKIE)
    assert out.value is not None and out.value["anonymous_id"] == COOKIE


# -- stage 1: first link ---------------------------------------------------------------------------
def test_first_link_emits_identities_linked_absorb_and_event_in_that_order() -> None:
    record = CookieRecord()
    cookie_step(record, page_view("/pricing", T0, anonymous_id=COOKIE), RULES)
    link = click(A, T0 + HOUR, anonymous_id=COOKIE)
    outs = cookie_step(record, link, RULES)
    assert shape(outs) == [
        ("identities", COOKIE, None),
        (CONTACT_WORK, A, "linked"),
        (CONTACT_WORK, A, "absorb"),
        (CONTACT_WORK, A, "event"),
    ]
    assert outs[0].value == {
        "anonymous_id": COOKIE,
        "contact_id": A,
        "previous_contact_id": None,
        "reason": "email_click",
        "event_id": link["event_id"],
        "at": from_millis(T0 + HOUR),
    }
    assert outs[1].value == {"k": "linked", "aid": COOKIE, "at": T0 + HOUR}
    absorbed = outs[2].value
    assert absorbed is not None
    assert (absorbed["aid"], absorbed["at"], absorbed["event_id"]) == (
        COOKIE,
        T0 + HOUR,
        link["event_id"],
    )
    assert absorbed["profile"]["score"] == 10.0
    event_out = outs[3].value
    assert event_out is not None
    assert event_out["e"]["contact_id"] == A
    assert event_out["e"]["pre_identification"] is False


def test_first_link_leaves_the_cookie_profile_empty_but_remembers_seen_events() -> None:
    record = CookieRecord()
    view = page_view("/pricing", T0, anonymous_id=COOKIE)
    cookie_step(record, view, RULES)
    cookie_step(record, click(A, T0 + 1, anonymous_id=COOKIE), RULES)
    assert record.profile.score == 0.0
    assert record.profile.caps == {}
    assert cookie_step(record, view, RULES) == []  # still a duplicate


def test_linked_cookie_events_are_not_scored_in_stage_one() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    outs = cookie_step(record, page_view("/pricing", T0 + 1, anonymous_id=COOKIE), RULES)
    assert shape(outs) == [(CONTACT_WORK, A, "event")]


def test_contact_stage_credits_anonymous_history_on_first_link() -> None:
    pipeline = Pipeline(RULES)
    pipeline.send(page_view("/pricing", T0, anonymous_id=COOKIE))
    pipeline.send(page_view("/products/widget", T0 + MINUTE, anonymous_id=COOKIE))
    outs = pipeline.send(click(A, T0 + HOUR, anonymous_id=COOKIE))
    scores = [o.value for o in outs if o.topic == "scores" and o.key == A]
    assert [(s["rule"], s["contact_id"]) for s in scores if s] == [
        ("anonymous_history", A),
        ("email-click", A),
    ]
    assert scores[0] is not None and scores[0]["delta"] == pytest.approx(13.0, abs=0.05)
    assert pipeline.contact(A).profile.score_at(T0 + HOUR, RULES.scoring.half_life) == (
        pytest.approx(16.0, abs=0.05)
    )
    assert pipeline.contact(A).cookies == [[COOKIE, T0 + HOUR]]


def test_anonymous_caps_carry_over_to_the_contact() -> None:
    pipeline = Pipeline(RULES)
    for i in range(3):
        pipeline.send(page_view("/pricing", T0 + i, anonymous_id=COOKIE))
    pipeline.send(identify(ANA, T0 + 10, anonymous_id=COOKIE))
    outs = pipeline.send(page_view("/pricing", T0 + 20, anonymous_id=COOKIE))
    assert [o for o in outs if o.topic == "scores"] == []


def _known_ana(pipeline: Pipeline, **fields: Any) -> None:
    pipeline.contact_update(
        {
            "contact_id": A,
            "source": "crm",
            "email": ANA,
            "consent_email": True,
            "received_at": from_millis(T0 - DAY),
            **fields,
        }
    )


def test_anonymous_reads_count_towards_the_contacts_count_rule_after_first_link() -> None:
    pipeline = Pipeline(RULES)
    _known_ana(pipeline)
    pipeline.send(page_view("/blog/marketing/a", T0, anonymous_id=COOKIE))
    pipeline.send(page_view("/blog/marketing/b", T0 + HOUR, anonymous_id=COOKIE))
    pipeline.send(click(A, T0 + 2 * HOUR, anonymous_id=COOKIE))
    pipeline.send(page_view("/blog/marketing/c", T0 + 3 * HOUR, anonymous_id=COOKIE))
    outs = pipeline.tick(T0 + 3 * HOUR + DAY)
    assert [o.value["rule"] for o in outs if o.topic == "triggers" and o.value] == [
        "marketing-webinar-invite"
    ]


def test_an_anonymous_match_schedules_the_contacts_trigger_from_its_own_time() -> None:
    """The README's first scenario: pricing views, then a link; next day the offer fires."""
    pipeline = Pipeline(RULES)
    _known_ana(pipeline)
    first = page_view("/pricing", T0, anonymous_id=COOKIE)
    pipeline.send(first)
    pipeline.send(page_view("/pricing/enterprise", T0 + MINUTE, anonymous_id=COOKIE))
    pipeline.send(click(A, T0 + HOUR, anonymous_id=COOKIE))
    [pending] = pipeline.contact(A).triggers.pending
    assert (pending["rule"], pending["due_at"]) == ("pricing-trial-offer", T0 + DAY)
    assert pipeline.tick(T0 + DAY - 1) == []
    [offer] = [o.value for o in pipeline.tick(T0 + DAY) if o.topic == "triggers"]
    assert offer is not None
    assert offer["cause_event_ids"] == [first["event_id"]]  # the history event
    assert offer["trigger_id"] == trigger_id("pricing-trial-offer", A, first["event_id"])


def test_an_anonymous_match_whose_moment_passed_fires_at_link_time() -> None:
    triggers = [
        r.model_copy(update={"history_within": timedelta(days=3)})
        if r.id == "pricing-trial-offer"
        else r
        for r in RULES.triggers.rules
    ]
    longer = RULES.model_copy(
        update={"triggers": RULES.triggers.model_copy(update={"rules": triggers})}
    )
    pipeline = Pipeline(longer)
    _known_ana(pipeline)
    view = page_view("/pricing", T0, anonymous_id=COOKIE)
    pipeline.send(view)
    outs = pipeline.send(identify(ANA, T0 + DAY + HOUR, anonymous_id=COOKIE))
    [offer] = [o.value for o in outs if o.topic == "triggers" and o.value]
    assert (offer["rule"], offer["cause_event_ids"]) == ("pricing-trial-offer", [view["event_id"]])
    assert offer["fired_at"] == roundtrip(from_millis(T0 + DAY + HOUR))
    assert offer["due_at"] == roundtrip(from_millis(T0 + DAY))


def test_an_anonymous_match_older_than_history_within_does_not_count() -> None:
    pipeline = Pipeline(RULES)
    _known_ana(pipeline)
    pipeline.send(page_view("/pricing", T0, anonymous_id=COOKIE))
    outs = pipeline.send(identify(ANA, T0 + DAY + DAY // 2, anonymous_id=COOKIE))  # > 1d old
    assert [o for o in outs if o.topic == "triggers"] == []
    assert pipeline.contact(A).triggers.pending == []


def test_anonymous_history_meets_consent_and_suppression_as_always() -> None:
    pipeline = Pipeline(RULES)
    _known_ana(pipeline, crm_status="customer")
    pipeline.send(page_view("/pricing", T0, anonymous_id=COOKIE))
    pipeline.send(identify(ANA, T0 + HOUR, anonymous_id=COOKIE))
    assert pipeline.contact(A).triggers.pending == []
    assert pipeline.tick(T0 + 2 * DAY) == []


def test_a_count_rule_counts_the_history_on_linking() -> None:
    pipeline = Pipeline(RULES)
    _known_ana(pipeline)
    reads = [
        page_view(f"/blog/marketing/{n}", T0 + n * HOUR, anonymous_id=COOKIE) for n in range(3)
    ]
    for read in reads:
        pipeline.send(read)
    pipeline.send(identify(ANA, T0 + 4 * HOUR, anonymous_id=COOKIE))
    [pending] = pipeline.contact(A).triggers.pending
    assert pending["rule"] == "marketing-webinar-invite"
    assert pending["cause_event_ids"] == [r["event_id"] for r in reads]
    assert pending["due_at"] == T0 + 4 * HOUR + DAY


def test_absorb_is_applied_once() -> None:
    record = ContactRecord(ContactState(contact_id=A))
    message = {
        "k": "absorb",
        "aid": COOKIE,
        "at": T0,
        "event_id": "e1",
        "profile": {"score": 10.0, "as_of": T0},
    }
    assert contact_step(record, message, RULES)
    assert contact_step(record, message, RULES) == []
    assert record.profile.score == 10.0


# -- stage 1: other identity decisions -------------------------------------------------------------
def test_relink_tells_both_contacts_and_moves_no_history() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    shared = form(BEN, T0 + HOUR, anonymous_id=COOKIE, form_id="demo-request")
    outs = cookie_step(record, shared, RULES)
    assert shape(outs) == [
        ("identities", COOKIE, None),
        (CONTACT_WORK, A, "unlinked"),
        (CONTACT_WORK, B, "linked"),
        ("contact-updates", B, None),
        (CONTACT_WORK, B, "update"),
        (CONTACT_WORK, B, "event"),
    ]
    assert outs[0].value is not None
    assert (outs[0].value["contact_id"], outs[0].value["previous_contact_id"]) == (B, A)
    assert outs[0].value["reason"] == "form_submit"


def test_relink_moves_the_cookie_between_contacts_in_stage_two() -> None:
    pipeline = Pipeline(RULES)
    pipeline.send(click(A, T0, anonymous_id=COOKIE))
    pipeline.send(identify(BEN, T0 + HOUR, anonymous_id=COOKIE))
    assert pipeline.contact(A).cookies == []
    assert pipeline.contact(B).cookies == [[COOKIE, T0 + HOUR]]
    assert pipeline.contact(B).absorbed == []


def test_forwarded_click_does_not_relink_but_counts_for_the_tokens_contact() -> None:
    pipeline = Pipeline(RULES)
    pipeline.send(click(A, T0, anonymous_id=COOKIE))
    outs = pipeline.send(click(B, T0 + HOUR, anonymous_id=COOKIE))
    assert [o for o in outs if o.topic == "identities"] == []
    assert pipeline.cookie(COOKIE).cookie.contact_id == A
    assert [(o.key, o.value["rule"]) for o in outs if o.topic == "scores" and o.value] == [
        (B, "email-click")
    ]


def test_kiosk_flag_unlinks_and_is_recorded() -> None:
    record = CookieRecord()
    rules_ = with_identity(max_relinks=1)
    cookie_step(record, form(ANA, T0, anonymous_id=COOKIE), rules_)
    cookie_step(record, form(BEN, T0 + 1, anonymous_id=COOKIE), rules_)
    third = form("cara.smith@initech.io", T0 + 2, anonymous_id=COOKIE)
    counters = Counters()
    outs = cookie_step(record, third, rules_, counters)
    identities = [o.value for o in outs if o.topic == "identities"]
    assert identities == [
        {
            "anonymous_id": COOKIE,
            "contact_id": None,
            "previous_contact_id": B,
            "reason": "cookie_relink_limit",
            "event_id": third["event_id"],
            "at": from_millis(T0 + 2),
        }
    ]
    assert (CONTACT_WORK, B, "unlinked") in shape(outs)
    assert record.cookie.flagged
    assert counters.values["identity_flag"] == 1  # ma_worker_decisions{what="identity_flag"}


def test_automated_click_is_kept_but_neither_links_nor_scores() -> None:
    pipeline = Pipeline(RULES)
    scanner = click(A, T0, anonymous_id=COOKIE, automated=True, automated_reason="scanner_ua")
    outs = pipeline.send(scanner)
    assert shape(outs) == [(CONTACT_WORK, A, "event")]
    work = outs[0].value
    assert work is not None
    assert work["e"]["automated"] is True
    assert work["e"]["contact_id"] == A  # kept in the token contact's history, for the sink
    assert pipeline.cookie(COOKIE).cookie.contact_id is None
    assert pipeline.contact(A).profile.score == 0.0
    assert pipeline.counters.values.get("automated") == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["an", "array"], "ma.events value: expected a JSON object, got a list"),
        ("text", "ma.events value: expected a JSON object, got a string"),
        (None, "ma.events value: expected a JSON object, got a null"),
        ({"type": "page_view"}, "ma.events value: missing event_id, received_at; every event"),
        ({"event_id": "e1", "type": None, "received_at": 1}, "missing type;"),
    ],
)
def test_an_event_stage_one_cannot_take_is_refused_with_what_is_wrong(
    value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_event(value)
    with pytest.raises(ValueError, match=r"^ma\.contact-updates value: expected a JSON object"):
        check_update([value])
    good = event("page_view")
    assert check_event(good) is good
    assert check_update({"contact_id": A}) == {"contact_id": A}


@pytest.mark.parametrize("cookie", ["undefined", "null", " 'none' ", "", 0, {"id": 1}])
def test_a_placeholder_cookie_from_another_producer_is_dropped_and_links_nothing(
    cookie: Any,
) -> None:
    submit = check_event(form(ANA, T0, anonymous_id=cookie))
    assert submit["anonymous_id"] is None  # kept as a cookieless event

    outs = cookie_step(CookieRecord(), submit, RULES)
    assert "identities" not in [o.topic for o in outs]
    assert shape(outs) == [
        ("contact-updates", A, None),
        (CONTACT_WORK, A, "update"),
        (CONTACT_WORK, A, "event"),
    ]


def test_an_email_in_another_spelling_links_the_same_contact() -> None:
    outs = cookie_step(CookieRecord(), form("  Ana.Lopez@ACME.io ", T0, anonymous_id=COOKIE), RULES)
    (link,) = [o.value for o in outs if o.topic == "identities" and o.value]
    assert link["contact_id"] == A


def test_automated_open_neither_scores_nor_triggers_where_a_human_open_does() -> None:
    open_rules = rules(
        """
        scoring:
          rules:
            - {id: opened, match: {type: email_open}, points: 2}
        triggers:
          rules:
            - {id: opened-alert, when: {event: {type: email_open}}, channel: sales,
               requires: [identified]}
        """
    )

    def email_open(**fields: Any) -> dict[str, Any]:
        return event("email_open", T0, contact_id=A, source="email", campaign_id="spring", **fields)

    human = Pipeline(open_rules)
    outs = human.send(email_open())
    assert human.contact(A).profile.score == 2.0
    assert [o.value["rule"] for o in outs if o.topic == "triggers" and o.value] == ["opened-alert"]

    scanner = Pipeline(open_rules)
    outs = scanner.send(email_open(automated=True, automated_reason="open_too_soon"))
    assert scanner.contact(A).profile.score == 0.0
    assert [o.topic for o in outs if o.topic in ("scores", "triggers")] == []
    assert scanner.counters.values.get("automated") == 1


def test_automated_click_on_an_unlinked_cookie_triggers_nothing() -> None:
    pipeline = Pipeline(RULES)
    pipeline.contact_update(
        {
            "contact_id": A,
            "source": "crm",
            "email": ANA,
            "consent_email": True,
            "received_at": from_millis(T0 - DAY),
        }
    )
    outs = pipeline.send(click(A, T0, anonymous_id=COOKIE, automated=True))
    assert [o.topic for o in outs if o.topic in ("triggers", "scores", "identities")] == []


def test_placeholder_form_neither_links_nor_updates_a_contact() -> None:
    outs = cookie_step(
        CookieRecord(), form("test@test.com", T0, anonymous_id=COOKIE, traits={"title": "x"}), RULES
    )
    assert [o.topic for o in outs] == [ANONYMOUS_EVENTS]


# -- stage 1: events without a cookie --------------------------------------------------------------
def test_server_event_without_cookie_goes_to_its_contact() -> None:
    signup = custom("trial_signup", T0, contact_id=A, source="server")
    (out,) = cookie_step(CookieRecord(), signup, RULES)
    assert out == Out(
        CONTACT_WORK,
        A,
        {"k": "event", "e": {**signup, "contact_id": A, "pre_identification": False}},
    )


def test_identify_without_cookie_updates_and_resolves_to_the_typed_email() -> None:
    outs = cookie_step(CookieRecord(), identify(ANA, T0, source="server"), RULES)
    assert shape(outs) == [
        ("contact-updates", A, None),
        (CONTACT_WORK, A, "update"),
        (CONTACT_WORK, A, "event"),
    ]


def test_event_without_cookie_or_contact_is_keyed_by_its_id() -> None:
    garbage = identify("null", T0, source="server")
    (out,) = cookie_step(CookieRecord(), garbage, RULES)
    assert (out.topic, out.key) == (ANONYMOUS_EVENTS, garbage["event_id"])
    assert out.value is not None and out.value["e"]["contact_id"] is None


# -- duplicates ------------------------------------------------------------------------------------
def test_duplicate_event_in_stage_one_has_no_outputs() -> None:
    record = CookieRecord()
    counters = Counters()
    view = page_view("/pricing", T0, anonymous_id=COOKIE)
    assert cookie_step(record, view, RULES, counters)
    assert cookie_step(record, view, RULES, counters) == []
    assert counters.values["duplicates"] == 1
    assert record.profile.score == 10.0


def test_duplicate_event_in_stage_two_has_no_outputs() -> None:
    record = consented()
    message = {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}
    assert contact_step(record, message, RULES)
    assert contact_step(record, message, RULES) == []
    assert record.profile.score == 10.0
    assert len(record.triggers.pending) == 1


def test_duplicate_link_event_links_once() -> None:
    pipeline = Pipeline(RULES)
    link = click(A, T0, anonymous_id=COOKIE)
    assert pipeline.send(link)
    assert pipeline.send(link) == []
    assert len(pipeline.of("identities")) == 1


# -- form traits -----------------------------------------------------------------------------------
def test_form_traits_produce_a_contact_update_with_source_form_and_consent() -> None:
    submit = form(
        ANA,
        T0,
        anonymous_id=COOKIE,
        form_id="whitepaper",
        traits={"title": "Marketing Manager", "company": "Acme", "consent_email": "on"},
    )
    outs = cookie_step(CookieRecord(), submit, RULES)
    (update,) = [o for o in outs if o.topic == "contact-updates"]
    assert update == Out(
        "contact-updates",
        A,
        {
            "contact_id": A,
            "op": "upsert",
            "source": "form",
            "email": ANA,
            "attributes": {"title": "Marketing Manager", "company": "Acme"},
            "received_at": submit["received_at"],
            "event_id": submit["event_id"],
            "consent_email": True,
            "via": "worker",  # an audit record: stage 2 applies the hand-over below
        },
    )
    (handover,) = [o for o in outs if o.topic == CONTACT_WORK and o.value["k"] == "update"]
    assert handover.value == {
        "k": "update",
        **{k: v for k, v in update.value.items() if k != "via"},
    }


def test_identify_traits_have_source_identify() -> None:
    outs = cookie_step(
        CookieRecord(), identify(ANA, T0, anonymous_id=COOKIE, traits={"plan": "pro"}), RULES
    )
    (update,) = [o.value for o in outs if o.topic == "contact-updates"]
    assert update is not None
    assert (update["source"], update["attributes"]) == ("identify", {"plan": "pro"})
    assert "consent_email" not in update


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, True),
        ("true", True),
        ("on", True),
        ("yes", True),
        ("1", True),
        (False, False),
        ("false", False),
        ("off", False),
        ("no", False),
        ("0", False),
    ],
)
def test_form_consent_values(given: Any, expected: bool) -> None:
    outs = cookie_step(CookieRecord(), form(ANA, T0, traits={"consent_email": given}), RULES)
    (update,) = [o.value for o in outs if o.topic == "contact-updates"]
    assert update is not None and update["consent_email"] is expected


@pytest.mark.parametrize("given", ["maybe", None, ""])
def test_unreadable_form_consent_is_no_statement(given: Any) -> None:
    outs = cookie_step(CookieRecord(), form(ANA, T0, traits={"consent_email": given}), RULES)
    (update,) = [o.value for o in outs if o.topic == "contact-updates"]
    assert update is not None and "consent_email" not in update


def test_form_with_consent_lets_delayed_email_triggers_fire() -> None:
    pipeline = Pipeline(RULES)
    pipeline.send(form(ANA, T0, anonymous_id=COOKIE, traits={"consent_email": True}))
    pipeline.send(page_view("/pricing", T0 + MINUTE, anonymous_id=COOKIE))
    assert pipeline.tick(T0 + DAY) == []
    outs = pipeline.tick(T0 + MINUTE + DAY)
    (trigger,) = [o.value for o in outs if o.topic == "triggers"]
    assert trigger is not None
    assert (trigger["rule"], trigger["contact_id"], trigger["email"]) == (
        "pricing-trial-offer",
        A,
        ANA,
    )


def test_contact_update_publishes_the_merged_contact_and_scores_attributes() -> None:
    pipeline = Pipeline(RULES)
    outs = pipeline.contact_update(
        {
            "contact_id": A,
            "op": "upsert",
            "source": "crm",
            "email": ANA,
            "attributes": {"title": "Marketing Manager", "department": "marketing"},
            "received_at": from_millis(T0),
        }
    )
    assert [o.topic for o in outs] == ["contacts", "scores", "scores"]
    assert outs[0].value is not None and outs[0].value["attributes"]["title"] == "Marketing Manager"
    assert [o.value["rule"] for o in outs[1:] if o.value] == [
        "manager-title",
        "marketing-department",
    ]


def test_attribute_points_from_a_form_name_the_form_submit_that_caused_them() -> None:
    pipeline = Pipeline(RULES)
    submit = form(ANA, T0, anonymous_id=COOKIE, traits={"title": "Marketing Manager"})
    pipeline.send(submit)

    changes = {s["rule"]: s for s in pipeline.of("scores")}
    assert changes["manager-title"]["event_id"] == submit["event_id"]
    assert changes["manager-title"]["contact_id"] == A
    # a CRM sync has no event: its attribute points name none
    pipeline.contact_update(
        {"contact_id": A, "op": "upsert", "source": "crm", "email": ANA,
         "attributes": {"department": "marketing"}, "received_at": from_millis(T0 + 1)}
    )  # fmt: skip
    (crm,) = [s for s in pipeline.of("scores") if s["rule"] == "marketing-department"]
    assert crm["event_id"] is None


def test_contact_update_that_changes_nothing_publishes_nothing() -> None:
    pipeline = Pipeline(RULES)
    update = {
        "contact_id": A,
        "source": "crm",
        "email": ANA,
        "attributes": {"title": "CTO"},
        "received_at": from_millis(T0),
    }
    assert pipeline.contact_update(update)
    assert pipeline.contact_update(update) == []


def test_crm_update_with_created_at_survives_the_topic() -> None:
    pipeline = Pipeline(RULES)
    outs = pipeline.contact_update(
        {
            "contact_id": A,
            "source": "crm",
            "email": ANA,
            "created_at": datetime(2024, 1, 1, tzinfo=UTC),
            "received_at": from_millis(T0),
        }
    )
    assert outs[0].value is not None
    assert outs[0].value["created_at"] == "2024-01-01T00:00:00Z"


# -- consent, bounces ------------------------------------------------------------------------------
def test_unsubscribe_event_sets_consent_false_and_publishes_the_contact() -> None:
    record = consented()
    unsubscribe = event("unsubscribe", T0, contact_id=A, source="email")
    outs = contact_step(record, {"k": "event", "e": unsubscribe}, RULES)
    contacts = [o for o in outs if o.topic == "contacts"]
    assert len(contacts) == 1
    assert contacts[0].key == A
    assert contacts[0].value is not None and contacts[0].value["consent_email"] is False
    assert record.contact.opted_out


def test_unsubscribe_stops_email_triggers_at_once() -> None:
    pipeline = Pipeline(RULES)
    pipeline.contact_update(
        {
            "contact_id": A,
            "source": "crm",
            "email": ANA,
            "consent_email": True,
            "received_at": from_millis(T0 - DAY),
        }
    )
    pipeline.send(click(A, T0, anonymous_id=COOKIE))
    pipeline.send(page_view("/pricing", T0 + 1, anonymous_id=COOKIE))
    pipeline.send(event("unsubscribe", T0 + HOUR, contact_id=A, source="email"))
    pipeline.contact_update(
        {
            "contact_id": A,
            "source": "crm",
            "email": ANA,
            "consent_email": True,
            "received_at": from_millis(T0 + 2 * HOUR),
        }
    )
    assert [o for o in pipeline.tick(T0 + 2 * DAY) if o.topic == "triggers"] == []
    assert pipeline.counters.values.get("trigger_skipped:no_consent") == 1


def test_hard_bounce_blocks_email_and_publishes_the_contact() -> None:
    record = consented()
    bounce = event("email_bounce", T0, contact_id=A, source="server", bounce_type="hard")
    outs = contact_step(record, {"k": "event", "e": bounce}, RULES)
    assert [o.topic for o in outs] == ["contacts"]
    assert record.contact.email_blocked == "hard_bounce"
    view = {"k": "event", "e": {**page_view("/pricing", T0 + 1), "contact_id": A}}
    contact_step(record, view, RULES)
    assert record.triggers.pending == []


def test_soft_bounce_changes_nothing() -> None:
    record = consented()
    bounce = event("email_bounce", T0, contact_id=A, source="server", bounce_type="soft")
    assert contact_step(record, {"k": "event", "e": bounce}, RULES) == []
    assert record.contact.email_blocked is None


# -- contact stage triggers ------------------------------------------------------------------------
def test_crm_status_suppresses_contact_triggers() -> None:
    record = consented(crm_status="customer")
    view = {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}
    counters = Counters()
    contact_step(record, view, RULES, counters)
    assert record.triggers.pending == []
    assert counters.values["trigger_skipped:suppressed"] == 1


def test_a_delayed_trigger_is_recorded_as_scheduled_with_its_due_time() -> None:
    """The contact page's "scheduled … due …": a decision recorded when it is made."""
    record = consented()
    view = {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}
    outs = contact_step(record, view, RULES)
    [scheduled] = [o.value for o in outs if o.topic == DECISIONS]
    due = from_millis(T0 + DAY).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert scheduled == {
        "contact_id": A,
        "anonymous_id": None,
        "at": from_millis(T0),
        "rule": "pricing-trial-offer",
        "decision": "scheduled",
        "reason": f"due_at:{due}",
        "event_id": view["e"]["event_id"],
    }
    assert [p["due_at"] for p in record.triggers.pending] == [T0 + DAY]


def test_a_skipped_trigger_is_recorded_with_its_reason_and_event() -> None:
    """What the console's contact page shows as "suppressed by …" (``ma.x.decisions``)."""
    record = consented(crm_status="customer")
    view = {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}
    outs = contact_step(record, view, RULES)
    decisions = [o for o in outs if o.topic == DECISIONS]
    assert [(o.key, o.value) for o in decisions] == [
        (
            A,
            {
                "contact_id": A,
                "anonymous_id": None,
                "at": from_millis(T0),
                "rule": "pricing-trial-offer",
                "decision": "skipped",
                "reason": "suppressed:customer",
                "event_id": view["e"]["event_id"],
            },
        )
    ]


def test_reaching_mql_alerts_sales_with_the_email() -> None:
    pipeline = Pipeline(RULES)
    pipeline.send(click(A, T0, anonymous_id=COOKIE))
    pipeline.contact_update(
        {"contact_id": A, "source": "crm", "email": ANA, "received_at": from_millis(T0)}
    )
    outs = pipeline.send(
        form(
            ANA,
            T0 + 1,
            anonymous_id=COOKIE,
            form_id="demo-request",
            traits={"title": "Marketing Manager"},
        )
    )
    alerts = [o.value for o in outs if o.topic == "triggers" and o.value]
    assert [(t["rule"], t["channel"], t["email"]) for t in alerts] == [
        ("mql-sales-alert", "sales", ANA)
    ]


def test_due_step_fires_a_contacts_delayed_trigger() -> None:
    record = consented()
    contact_step(record, {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}, RULES)
    assert due_step(record, RULES, T0 + DAY - 1) == []
    (out,) = due_step(record, RULES, T0 + DAY)
    assert (out.topic, out.key) == ("triggers", A)
    assert out.value is not None and out.value["email"] == ANA


def test_due_tick_fires_a_contacts_delayed_trigger() -> None:
    record = consented()
    contact_step(record, {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}, RULES)
    assert contact_step(record, {"k": "due", "at": T0 + DAY - 1}, RULES) == []
    outs = contact_step(record, {"k": "due", "at": T0 + DAY}, RULES)
    assert [(o.topic, o.key) for o in outs] == [("triggers", A)]
    assert contact_step(record, {"k": "due", "at": T0 + DAY}, RULES) == []  # a resent tick


# -- contact cookie limit --------------------------------------------------------------------------
def test_contact_cookie_limit_evicts_the_least_recently_linked_cookie() -> None:
    record = ContactRecord(ContactState(contact_id=A))
    limited = with_identity(max_cookies_per_contact=2)
    assert contact_step(record, {"k": "linked", "aid": aid(1), "at": T0}, limited) == []
    assert contact_step(record, {"k": "linked", "aid": aid(2), "at": T0 + 1}, limited) == []
    counters = Counters()
    outs = contact_step(record, {"k": "linked", "aid": aid(3), "at": T0 + 2}, limited, counters)
    assert counters.values == {"identity_evicted": 1}  # ma_worker_decisions{what=…} on /metrics
    assert outs == [
        Out(
            "identities",
            aid(1),
            {
                "anonymous_id": aid(1),
                "contact_id": None,
                "previous_contact_id": A,
                "reason": "contact_cookie_limit",
                "event_id": None,
                "at": from_millis(T0 + 2),
            },
        ),
        Out(COOKIE_COMMANDS, aid(1), {"k": "unlink", "contact_id": A}),
    ]
    assert [c[0] for c in record.cookies] == [aid(2), aid(3)]


def test_relinking_a_cookie_makes_it_the_most_recent() -> None:
    record = ContactRecord(ContactState(contact_id=A))
    limited = with_identity(max_cookies_per_contact=2)
    for n, at in ((1, T0), (2, T0 + 1), (1, T0 + 2)):
        contact_step(record, {"k": "linked", "aid": aid(n), "at": at}, limited)
    outs = contact_step(record, {"k": "linked", "aid": aid(3), "at": T0 + 3}, limited)
    assert outs[0].key == aid(2)


def test_unlinked_message_forgets_the_cookie() -> None:
    record = ContactRecord(ContactState(contact_id=A), cookies=[[aid(1), T0], [aid(2), T0]])
    assert contact_step(record, {"k": "unlinked", "aid": aid(1)}, RULES) == []
    assert record.cookies == [[aid(2), T0]]


def test_evicted_cookie_is_unlinked_in_stage_one_and_relinks_without_history() -> None:
    pipeline = Pipeline(with_identity(max_cookies_per_contact=2))
    for n in (1, 2, 3):
        pipeline.send(click(A, T0 + n * HOUR, anonymous_id=aid(n)))
    evicted = pipeline.cookie(aid(1)).cookie
    assert (evicted.contact_id, evicted.ever_linked) == (None, True)
    assert [c[0] for c in pipeline.contact(A).cookies] == [aid(2), aid(3)]
    outs = pipeline.send(click(A, T0 + DAY, anonymous_id=aid(1)))
    assert [o.value["k"] for o in outs if o.topic == CONTACT_WORK and o.value] == [
        "linked",
        "event",
    ]


# -- cookie commands -------------------------------------------------------------------------------
def test_cookie_command_unlinks_when_the_contact_matches() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    cookie_command(record, {"k": "unlink", "contact_id": A}, COOKIE, RULES)
    assert (record.cookie.contact_id, record.cookie.linked_at) == (None, None)
    assert record.cookie.ever_linked


def test_cookie_command_for_another_contact_is_ignored() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    cookie_command(record, {"k": "unlink", "contact_id": B}, COOKIE, RULES)
    assert record.cookie.contact_id == A


def test_unknown_cookie_command_is_ignored() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    cookie_command(record, {"k": "explode", "contact_id": A}, COOKIE, RULES)
    assert record.cookie.contact_id == A


def test_events_after_an_unlink_are_anonymous_but_not_pre_identification() -> None:
    record = CookieRecord()
    cookie_step(record, click(A, T0, anonymous_id=COOKIE), RULES)
    cookie_command(record, {"k": "unlink", "contact_id": A}, COOKIE, RULES)
    outs = cookie_step(record, page_view("/pricing", T0 + 1, anonymous_id=COOKIE), RULES)
    (work,) = [o.value for o in outs if o.topic == ANONYMOUS_EVENTS]
    assert work is not None
    assert (work["e"]["contact_id"], work["e"]["pre_identification"]) == (None, False)


# -- plumbing --------------------------------------------------------------------------------------
def test_unknown_contact_work_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown contact-work message kind 'bogus'"):
        contact_step(ContactRecord(ContactState(contact_id=A)), {"k": "bogus"}, RULES)


@pytest.mark.parametrize(
    "received_at",
    [
        from_millis(T0),
        T0,
        float(T0),
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00+01:00",
        "2026-01-01T00:00:00.000Z",
    ],
)
def test_event_time_reads_every_form_of_received_at(received_at: Any) -> None:
    assert event_time({"received_at": received_at}) == T0


def test_cookie_record_round_trips_through_json() -> None:
    record = CookieRecord()
    cookie_step(record, page_view("/pricing", T0, anonymous_id=COOKIE), RULES)
    cookie_step(record, click(A, T0 + 1, anonymous_id=COOKIE), RULES)
    assert CookieRecord.from_dict(roundtrip(record.to_dict())) == record


def test_contact_record_round_trips_through_json() -> None:
    record = consented()
    contact_step(record, {"k": "event", "e": {**page_view("/pricing", T0), "contact_id": A}}, RULES)
    contact_step(record, {"k": "linked", "aid": COOKIE, "at": T0}, RULES)
    again = ContactRecord.from_dict(A, roundtrip(record.to_dict()))
    assert again == record


def test_missing_contact_record_is_a_new_contact() -> None:
    record = ContactRecord.from_dict(A, None)
    assert record.contact == ContactState(contact_id=A)
    assert record.cookies == []


# -- determinism -----------------------------------------------------------------------------------
def scenario() -> list[dict[str, Any]]:
    """A day in the life: anonymous browsing, a click, a shared PC, a scanner, an unsubscribe."""
    at = T0
    steps: list[dict[str, Any]] = []
    for path in ("/blog/marketing/a", "/pricing", "/blog/marketing/b", "/products/widget"):
        at += 5 * MINUTE
        steps.append(page_view(path, at, anonymous_id=aid(1)))
    steps.append(click(A, at + MINUTE, anonymous_id=aid(1), campaign_id="spring"))
    steps.append(click(A, at + MINUTE, anonymous_id=aid(2), automated=True))
    steps.append(
        form(
            ANA,
            at + HOUR,
            anonymous_id=aid(2),
            form_id="whitepaper",
            traits={"title": "Marketing Manager", "consent_email": "on"},
        )
    )
    steps.append(page_view("/blog/marketing/c", at + 2 * HOUR, anonymous_id=aid(1)))
    steps.append(form(BEN, at + 3 * HOUR, anonymous_id=aid(1), form_id="demo-request"))
    steps.append(click(A, at + 4 * HOUR, anonymous_id=aid(1)))  # forwarded to Ben's cookie
    for n in range(3):
        steps.append(page_view("/blog/x/data-driven-marketing", at + n * HOUR, anonymous_id=aid(3)))
    steps.append(custom("trial_signup", at + 5 * HOUR, contact_id=B, source="server"))
    steps.append(event("unsubscribe", at + 6 * HOUR, contact_id=A, source="email"))
    steps.append(steps[1])  # a retry
    return steps


def run(events: list[dict[str, Any]]) -> list[bytes]:
    pipeline = Pipeline(RULES)
    outs: list[Out] = []
    for e in events:
        outs += pipeline.send(e)
    outs += pipeline.tick(T0 + 2 * DAY)
    return [codec.dumps([o.topic, o.key, o.value]) for o in outs]


def test_replaying_the_same_events_from_fresh_state_gives_identical_outputs() -> None:
    events = scenario()
    first = run(events)
    assert first == run(events)
    assert len(first) > 20


def test_the_scenario_produces_the_expected_identity_trail() -> None:
    pipeline = Pipeline(RULES)
    for e in scenario():
        pipeline.send(e)
    trail = [
        (i["anonymous_id"], i["contact_id"], i["previous_contact_id"], i["reason"])
        for i in pipeline.of("identities")
    ]
    assert trail == [
        (aid(1), A, None, "email_click"),
        (aid(2), A, None, "form_submit"),
        (aid(1), B, A, "form_submit"),
    ]
    assert pipeline.contact(A).contact.consent_email is False
    assert sorted(c[0] for c in pipeline.contact(A).cookies) == [aid(2)]


def test_produce_partitions_keys_as_aiokafka_does() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from pipeline.worker.produce import partition_for

    partitioner = DefaultPartitioner()
    for n in (1, 4, 12):
        partitions = list(range(n))
        for i in range(200):
            key = f"contact-{i}".encode()
            assert partition_for(key, partitions) == partitioner(key, partitions, partitions)
