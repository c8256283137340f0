"""Identity decisions (CONTRACT §3): which events link, re-link or leave a cookie alone."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rules.models import Identity
from pipeline.stitch import Cookie, Decision, decide, evidence_for
from tests.unit.factories import (
    ANA,
    BEN,
    CARA,
    DAY,
    HOUR,
    MINUTE,
    T0,
    click,
    contact,
    custom,
    event,
    form,
    identify,
    page_view,
    rules,
)

A, B, C = contact(ANA), contact(BEN), contact(CARA)
DEFAULTS = Identity()  # max_relinks 3 per 1d


def others(n: int) -> list[str]:
    return [contact(f"person{i}@corp{i}.io") for i in range(n)]


def linked_to(contact_id: str, at: int = T0) -> Cookie:
    cookie = Cookie()
    decide(cookie, click(contact_id, at), DEFAULTS, at)
    return cookie


# -- evidence --------------------------------------------------------------------------------------
def test_human_email_click_is_evidence_for_its_token_contact() -> None:
    assert evidence_for(click(A)) == A


def test_automated_email_click_is_not_evidence() -> None:
    assert evidence_for(click(A, automated=True, automated_reason="scanner")) is None


def test_email_click_without_a_contact_is_not_evidence() -> None:
    assert evidence_for(event("email_click", url="https://www.acme.example/")) is None


@pytest.mark.parametrize("kind", ["form_submit", "identify"])
def test_form_and_identify_are_evidence_for_the_typed_email(kind: str) -> None:
    assert evidence_for(event(kind, email=ANA)) == A


@pytest.mark.parametrize("kind", ["page_view", "custom", "email_open", "email_sent", "unsubscribe"])
def test_other_event_types_are_never_evidence(kind: str) -> None:
    assert evidence_for(event(kind, email=ANA, contact_id=A)) is None


@pytest.mark.parametrize("kind", ["form_submit", "identify"])
def test_form_without_email_is_not_evidence(kind: str) -> None:
    assert evidence_for(event(kind)) is None


PLACEHOLDERS = [
    "test@test.com",
    "noreply@acme.io",
    "no-reply@acme.io",
    "no_reply@globex.io",
    "donotreply@acme.io",
    "do-not-reply@acme.io",
    "a@a.a",
    "asdf@asdf.com",
    "user@example.com",
    "ana@acme.test",
    "foo@bar.com",
    "null",
    "undefined",
    "none",
    "0",
    "-1",
    "[object object]",
    "'null'",
    '"undefined"',
    " ",
    "",
    "not-an-email",
    "ana@localhost",
]


@pytest.mark.parametrize("email", PLACEHOLDERS)
@pytest.mark.parametrize("kind", ["form_submit", "identify"])
def test_placeholder_or_garbage_email_is_never_evidence(kind: str, email: str) -> None:
    assert evidence_for(event(kind, email=email)) is None


# -- linking an unlinked cookie --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda at: click(A, at), "email_click"),
        (lambda at: form(ANA, at, form_id="whitepaper"), "form_submit"),
        (lambda at: identify(ANA, at), "identify"),
    ],
    ids=["human_click", "form", "identify"],
)
def test_unlinked_cookie_is_linked_by_any_evidence(make: Any, reason: str) -> None:
    cookie = Cookie()
    decision = decide(cookie, make(T0), DEFAULTS, T0)
    assert decision == Decision("link", A, A, None, reason, first_link=True)
    assert (cookie.contact_id, cookie.linked_at, cookie.ever_linked) == (A, T0, True)


def test_automated_click_never_links_an_unlinked_cookie() -> None:
    cookie = Cookie()
    decision = decide(cookie, click(A, automated=True), DEFAULTS, T0)
    assert decision.action == "none"
    assert decision.cookie_contact_id is None
    assert cookie == Cookie()


def test_automated_click_is_still_attributed_to_its_token_contact() -> None:
    decision = decide(Cookie(), click(A, automated=True), DEFAULTS, T0)
    assert decision.contact_id == A  # kept in the contact's history, flagged automated


def test_automated_click_for_someone_else_does_not_relink() -> None:
    cookie = linked_to(A)
    decision = decide(cookie, click(B, T0 + HOUR, automated=True), DEFAULTS, T0 + HOUR)
    assert decision.action == "none"
    assert cookie.contact_id == A


@pytest.mark.parametrize("email", PLACEHOLDERS)
def test_placeholder_email_never_links(email: str) -> None:
    cookie = Cookie()
    decision = decide(cookie, form(email), DEFAULTS, T0)
    assert decision.action == "none"
    assert decision.contact_id is None
    assert cookie == Cookie()


def test_placeholder_email_on_a_linked_cookie_keeps_the_cookie_and_its_contact() -> None:
    cookie = linked_to(A)
    decision = decide(cookie, form("test@test.com", T0 + HOUR), DEFAULTS, T0 + HOUR)
    assert decision == Decision("none", A, A)
    assert cookie.contact_id == A
    assert cookie.relinks == []


@pytest.mark.parametrize("kind", ["page_view", "custom", "email_open"])
def test_behaviour_events_never_link(kind: str) -> None:
    cookie = Cookie()
    decision = decide(cookie, event(kind, contact_id=A, email=ANA), DEFAULTS, T0)
    assert decision.action == "none"
    assert cookie.contact_id is None


# -- attribution -----------------------------------------------------------------------------------
def test_event_on_unlinked_cookie_is_anonymous() -> None:
    decision = decide(Cookie(), page_view("/pricing"), DEFAULTS, T0)
    assert decision == Decision("none", None, None)


def test_event_on_linked_cookie_belongs_to_the_cookies_contact() -> None:
    cookie = linked_to(A)
    assert decide(cookie, page_view("/pricing", T0 + 1), DEFAULTS, T0 + 1).contact_id == A


def test_server_event_naming_a_contact_is_attributed_to_it_without_linking() -> None:
    cookie = Cookie()
    decision = decide(cookie, custom("trial_signup", contact_id=B, source="server"), DEFAULTS, T0)
    assert decision == Decision("none", B, None)
    assert cookie.contact_id is None


def test_link_keeps_its_time_and_reason() -> None:
    cookie = Cookie()
    decision = decide(cookie, identify(ANA, T0 + 5 * MINUTE), DEFAULTS, T0 + 5 * MINUTE)
    assert decision.reason == "identify"
    assert cookie.linked_at == T0 + 5 * MINUTE


# -- forwarded mail --------------------------------------------------------------------------------
def test_forwarded_click_does_not_relink_cookie() -> None:
    cookie = linked_to(A)
    decision = decide(cookie, click(B, T0 + HOUR), DEFAULTS, T0 + HOUR)
    assert decision.action == "none"
    assert decision.cookie_contact_id == A
    assert cookie.contact_id == A
    assert cookie.linked_at == T0


def test_forwarded_click_is_attributed_to_the_tokens_contact() -> None:
    cookie = linked_to(A)
    assert decide(cookie, click(B, T0 + HOUR), DEFAULTS, T0 + HOUR).contact_id == B


def test_forwarded_clicks_never_count_towards_the_relink_limit() -> None:
    cookie = linked_to(A)
    for i, other in enumerate(others(10)):
        decide(cookie, click(other, T0 + i), DEFAULTS, T0 + i)
    assert cookie.relinks == []
    assert not cookie.flagged
    assert cookie.contact_id == A


def test_click_for_the_cookies_own_contact_changes_nothing() -> None:
    cookie = linked_to(A)
    before = Cookie.from_dict(cookie.to_dict())
    assert decide(cookie, click(A, T0 + DAY), DEFAULTS, T0 + DAY) == Decision("none", A, A)
    assert cookie == before


# -- shared computer -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["form_submit", "identify"])
def test_shared_pc_form_by_another_person_relinks_without_merging(kind: str) -> None:
    cookie = linked_to(A)
    decision = decide(cookie, event(kind, T0 + HOUR, email=BEN), DEFAULTS, T0 + HOUR)
    assert decision == Decision("relink", B, B, A, kind, first_link=False)
    assert cookie.contact_id == B
    assert cookie.linked_at == T0 + HOUR
    assert cookie.relinks == [T0 + HOUR]


def test_same_contact_again_is_no_decision() -> None:
    cookie = linked_to(A)
    before = Cookie.from_dict(cookie.to_dict())
    decision = decide(cookie, form(ANA, T0 + HOUR), DEFAULTS, T0 + HOUR)
    assert decision == Decision("none", A, A)
    assert cookie == before


def test_relink_back_to_the_first_contact_is_a_relink_not_a_first_link() -> None:
    cookie = linked_to(A)
    decide(cookie, form(BEN, T0 + 1), DEFAULTS, T0 + 1)
    decision = decide(cookie, form(ANA, T0 + 2), DEFAULTS, T0 + 2)
    assert decision.action == "relink"
    assert decision.previous_contact_id == B
    assert not decision.first_link


# -- kiosks ----------------------------------------------------------------------------------------
def _email(i: int) -> str:
    return f"person{i}@corp{i}.io"


def test_relinks_up_to_the_limit_are_allowed() -> None:
    cookie = linked_to(A)
    for i in range(1, DEFAULTS.max_relinks + 1):
        at = T0 + i * MINUTE
        assert decide(cookie, form(_email(i), at), DEFAULTS, at).action == "relink"
    assert not cookie.flagged
    assert cookie.contact_id == contact(_email(DEFAULTS.max_relinks))


def test_kiosk_relinked_more_than_max_relinks_within_the_period_is_flagged_and_unlinked() -> None:
    cookie = linked_to(A)
    last = A
    for i in range(1, DEFAULTS.max_relinks + 1):
        decide(cookie, form(_email(i), T0 + i * MINUTE), DEFAULTS, T0 + i * MINUTE)
        last = contact(_email(i))
    at = T0 + HOUR
    decision = decide(cookie, form(BEN, at), DEFAULTS, at)
    assert decision == Decision("flag", B, None, last, "cookie_relink_limit")
    assert cookie.flagged
    assert cookie.contact_id is None
    assert cookie.linked_at is None


def test_flagged_cookie_never_links_again() -> None:
    cookie = Cookie(flagged=True, ever_linked=True)
    at = T0 + 30 * DAY
    for make in (lambda: click(A, at), lambda: form(BEN, at), lambda: identify(CARA, at)):
        decision = decide(cookie, make(), DEFAULTS, at)
        assert decision.action == "none"
        assert decision.cookie_contact_id is None
    assert cookie.contact_id is None
    assert cookie.flagged


def test_evidence_on_a_flagged_cookie_still_counts_for_the_person_it_names() -> None:
    cookie = Cookie(flagged=True, ever_linked=True)
    assert decide(cookie, form(BEN), DEFAULTS, T0).contact_id == B


def test_relinks_outside_the_period_do_not_count() -> None:
    cookie = linked_to(A)
    emails = [ANA, BEN] * 10
    for i, email in enumerate(emails[1:], start=1):
        at = T0 + i * (DAY + MINUTE)  # each re-link more than a period after the previous one
        assert decide(cookie, form(email, at), DEFAULTS, at).action == "relink"
    assert not cookie.flagged
    assert len(cookie.relinks) == 1


def test_relink_period_is_a_sliding_window() -> None:
    identity = rules("identity: {max_relinks: 2, relink_period: 1d}").identity
    cookie = linked_to(A)
    decide(cookie, form(BEN, T0 + 1 * HOUR), identity, T0 + 1 * HOUR)
    decide(cookie, form(ANA, T0 + 10 * HOUR), identity, T0 + 10 * HOUR)
    # 25 hours after the first re-link it has left the window: two in the last day, allowed
    at = T0 + 26 * HOUR
    assert decide(cookie, form(BEN, at), identity, at).action == "relink"
    # a third within a day of the second is one too many
    at = T0 + 27 * HOUR
    assert decide(cookie, form(ANA, at), identity, at).action == "flag"


def test_max_relinks_zero_flags_on_the_first_relink() -> None:
    identity = rules("identity: {max_relinks: 0}").identity
    cookie = linked_to(A)
    assert decide(cookie, form(BEN, T0 + 1), identity, T0 + 1).action == "flag"


def test_first_link_does_not_count_as_a_relink() -> None:
    identity = rules("identity: {max_relinks: 0}").identity
    cookie = Cookie()
    assert decide(cookie, form(ANA), identity, T0).action == "link"
    assert cookie.relinks == []


# -- first link ------------------------------------------------------------------------------------
def test_first_link_is_true_only_the_first_time() -> None:
    cookie = Cookie()
    assert decide(cookie, click(A, T0), DEFAULTS, T0).first_link
    assert not decide(cookie, form(BEN, T0 + 1), DEFAULTS, T0 + 1).first_link


def test_link_after_an_unlink_is_not_a_first_link() -> None:
    cookie = linked_to(A)
    cookie.contact_id, cookie.linked_at = None, None  # as a contact_cookie_limit unlink does
    decision = decide(cookie, click(B, T0 + DAY), DEFAULTS, T0 + DAY)
    assert decision.action == "link"
    assert not decision.first_link
    assert decision.previous_contact_id is None
    assert cookie.contact_id == B


def test_relink_never_moves_anonymous_history() -> None:
    cookie = linked_to(A)
    assert not decide(cookie, identify(BEN, T0 + 1), DEFAULTS, T0 + 1).first_link


# -- state -----------------------------------------------------------------------------------------
def test_cookie_round_trips_through_its_dict() -> None:
    cookie = Cookie(contact_id=A, linked_at=T0, ever_linked=True, relinks=[T0, T0 + 1])
    assert Cookie.from_dict(cookie.to_dict()) == cookie


@pytest.mark.parametrize("data", [None, {}])
def test_missing_cookie_state_is_a_fresh_unlinked_cookie(data: dict[str, Any] | None) -> None:
    assert Cookie.from_dict(data) == Cookie()


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["click", "click_automated", "form", "identify", "page_view"]),
        st.sampled_from([ANA, BEN, CARA, "test@test.com"]),
        st.integers(min_value=0, max_value=3 * DAY),
    ),
    max_size=25,
)


def _make(kind: str, email: str, at: int) -> dict[str, Any]:
    if kind == "click":
        return click(contact(email), at)
    if kind == "click_automated":
        return click(contact(email), at, automated=True)
    if kind == "page_view":
        return page_view("/pricing", at)
    return event("form_submit" if kind == "form" else kind, at, email=email)


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_identity_invariants_hold_for_any_sequence(steps: list[tuple[str, str, int]]) -> None:
    identity = rules("identity: {max_relinks: 2, relink_period: 1d}").identity
    cookie = Cookie()
    replay = Cookie()
    links = 0
    for kind, email, offset in sorted(steps, key=lambda s: s[2]):
        at = T0 + offset
        event_ = _make(kind, email, at)
        before = cookie.contact_id
        decision = decide(cookie, event_, identity, at)
        assert decision == decide(replay, event_, identity, at)  # deterministic
        placeholder = kind in ("form", "identify") and email == "test@test.com"
        if kind in ("click_automated", "page_view") or placeholder:
            assert decision.action == "none"
        if kind.startswith("click") and before is not None:
            assert cookie.contact_id == before  # clicks never move a linked cookie
        if cookie.flagged:
            assert cookie.contact_id is None
        links += decision.first_link
    assert links <= 1
