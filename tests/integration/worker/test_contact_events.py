"""CONTRACT §6 end to end: the ``contact_events`` view gives a contact every event of theirs,
including each cookie's anonymous history from before its first link, and never another
contact's events — also after a shared computer re-links a cookie to someone else.

Each scenario hand-computes who owns which event and compares it, event by event, with what
the view says (every event_id of the scenario's cookies: to whom, and how many times).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from pipeline import contact_id_for
from tests.integration.worker.conftest import Stack, eventually, new_aid, new_email, page_view

pytestmark = pytest.mark.integration


def signal(kind: str, aid: str, email: str, **extra: Any) -> dict[str, Any]:
    """An ``identify`` or ``form_submit`` with an event_id the test knows."""
    event = {"type": kind, "anonymous_id": aid, "email": email, "event_id": str(uuid.uuid4())}
    if kind == "form_submit":
        event["form_id"] = "newsletter"
    return {**event, **extra}


def ids(*events: dict[str, Any]) -> set[str]:
    return {e["event_id"] for e in events}


async def click_event_id(stack: Stack, aid: str, contact: str) -> str:
    """Click the contact's email link on this cookie; the event_id the collector gave it."""
    assert (await stack.click(aid, contact)).status == 302
    rows = await eventually(lambda: stack.query(
        "SELECT event_id FROM {db}.events WHERE anonymous_id = {a:String} AND type = 'email_click'"
        " AND contact_id = {c:String}", a=aid, c=contact))  # fmt: skip
    assert len(rows) == 1
    event_id: str = rows[0][0]
    return event_id


async def landed(stack: Stack, cookies: Iterable[str], events: int, identities: int) -> None:
    """Wait until the sink stored this many events and identity decisions of these cookies."""
    aids = sorted(cookies)

    async def check() -> bool:
        [[stored]] = await stack.query(
            "SELECT count() FROM {db}.events WHERE anonymous_id IN {a:Array(String)}", a=aids
        )
        [[links]] = await stack.query(
            "SELECT count() FROM {db}.identities WHERE anonymous_id IN {a:Array(String)}", a=aids
        )
        assert stored <= events and links <= identities, (stored, links)  # nothing extra
        return bool(stored == events and links == identities)

    await eventually(check, timeout=60)


async def owners(stack: Stack, cookies: Iterable[str]) -> dict[str, list[str]]:
    """Every event of these cookies → the contacts ``contact_events`` gives it to (with repeats)."""
    rows = await stack.query(
        "SELECT e.event_id, ce.contact_id FROM {db}.events AS e "
        "LEFT JOIN (SELECT event_id, contact_id FROM {db}.contact_events) AS ce "
        "ON ce.event_id = e.event_id "
        "WHERE e.anonymous_id IN {a:Array(String)}", a=sorted(cookies))  # fmt: skip
    found: dict[str, list[str]] = {}
    for event_id, contact in rows:
        found.setdefault(event_id, [])
        if contact:
            found[event_id].append(contact)
    return {event_id: sorted(contacts) for event_id, contacts in found.items()}


async def history(stack: Stack, contact: str) -> list[str]:
    """The event_ids ``contact_events`` lists for a contact, sorted, repeats kept."""
    rows = await stack.query(
        "SELECT event_id FROM {db}.contact_events WHERE contact_id = {c:String}", c=contact
    )
    return sorted(r[0] for r in rows)


def expected_owners(
    by_contact: dict[str, set[str]], nobody: Iterable[str] = ()
) -> dict[str, list[str]]:
    """What ``owners`` must answer: each event once, to its one contact (or to nobody)."""
    expected = {
        event_id: [contact] for contact, events in by_contact.items() for event_id in events
    }
    expected.update({event_id: [] for event_id in nobody})
    return expected


async def test_anonymous_history_joins_the_contact_on_an_email_click(stack: Stack) -> None:
    aid, stranger = new_aid(), new_aid()
    contact = str(contact_id_for(new_email("ana")))
    before = [page_view(aid, "/"), page_view(aid, "/pricing"), page_view(aid, "/blog/marketing/a")]
    noise = [page_view(stranger, "/pricing"), page_view(stranger, "/careers")]
    await stack.send(*before, *noise)
    click = await click_event_id(stack, aid, contact)
    after = [page_view(aid, "/products/x"), page_view(aid, "/pricing")]
    await stack.send(*after)
    await landed(stack, [aid, stranger], events=len(before) + 1 + len(after) + len(noise),
                 identities=1)  # fmt: skip

    mine = ids(*before, *after) | {click}
    assert await history(stack, contact) == sorted(mine)  # each once, and nothing else
    assert await owners(stack, [aid, stranger]) == expected_owners(
        {contact: mine}, nobody=ids(*noise))  # fmt: skip
    flagged = await stack.query(
        "SELECT event_id FROM {db}.contact_events WHERE contact_id = {c:String} "
        "AND from_anonymous_history = 1", c=contact)  # fmt: skip
    assert sorted(r[0] for r in flagged) == sorted(ids(*before))


async def test_second_device_brings_its_own_anonymous_history_via_a_form(stack: Stack) -> None:
    phone, laptop = new_aid(), new_aid()
    email = new_email("cara")
    contact = str(contact_id_for(email))
    phone_before = [page_view(phone, "/blog/marketing/a"), page_view(phone, "/pricing")]
    laptop_before = [page_view(laptop, "/"), page_view(laptop, "/products/x"),
                     page_view(laptop, "/pricing")]  # fmt: skip
    await stack.send(*phone_before, *laptop_before)
    click = await click_event_id(stack, phone, contact)
    form = signal("form_submit", laptop, email.upper())  # typed differently: the same contact
    laptop_after = [page_view(laptop, "/pricing/enterprise")]
    phone_after = [page_view(phone, "/blog/b")]
    await stack.send(form, *laptop_after)
    await stack.send(*phone_after)
    await landed(stack, [phone, laptop], events=9, identities=2)

    mine = ids(*phone_before, *laptop_before, form, *laptop_after, *phone_after) | {click}
    assert await history(stack, contact) == sorted(mine)
    assert await owners(stack, [phone, laptop]) == expected_owners({contact: mine})
    cookies = await stack.query(
        "SELECT anonymous_id, countIf(from_anonymous_history = 1) FROM {db}.contact_events "
        "WHERE contact_id = {c:String} GROUP BY anonymous_id", c=contact)  # fmt: skip
    assert sorted(map(tuple, cookies)) == sorted([(phone, 2), (laptop, 3)])


async def test_shared_computer_keeps_the_history_with_its_first_contact(stack: Stack) -> None:
    shared, bens_phone = new_aid(), new_aid()
    ana, ben = new_email("ana"), new_email("ben")
    ana_id, ben_id = str(contact_id_for(ana)), str(contact_id_for(ben))
    anonymous = [page_view(shared, "/"), page_view(shared, "/pricing")]
    ana_signs_in = signal("identify", shared, ana)
    ana_browses = [page_view(shared, "/blog/marketing/a"), page_view(shared, "/products/x")]
    ben_types_his_email = signal("form_submit", shared, ben)  # someone else on the same PC
    ben_browses = [page_view(shared, "/pricing"), page_view(shared, "/careers")]
    bens_phone_before = [page_view(bens_phone, "/blog/b")]
    await stack.send(*anonymous, ana_signs_in, *ana_browses, *bens_phone_before)
    await stack.send(ben_types_his_email, *ben_browses)
    # Ana's own mail, clicked on the PC now re-linked to Ben: counts for Ana, does not re-link
    anas_click = await click_event_id(stack, shared, ana_id)
    bens_later = [page_view(shared, "/blog/marketing/b")]
    await stack.send(*bens_later)
    bens_phone_click = await click_event_id(stack, bens_phone, ben_id)
    await landed(stack, [shared, bens_phone], events=12, identities=3)

    decisions = await stack.query(
        "SELECT contact_id, previous_contact_id, reason FROM {db}.identities "
        "WHERE anonymous_id = {a:String} ORDER BY at", a=shared)  # fmt: skip
    assert decisions == [[ana_id, "", "identify"], [ben_id, ana_id, "form_submit"]]
    anas = ids(*anonymous, ana_signs_in, *ana_browses) | {anas_click}
    bens = ids(ben_types_his_email, *ben_browses, *bens_later, *bens_phone_before) | {
        bens_phone_click
    }
    assert await history(stack, ana_id) == sorted(anas)
    assert await history(stack, ben_id) == sorted(bens)  # his phone's history, not the PC's
    assert await owners(stack, [shared, bens_phone]) == expected_owners(
        {ana_id: anas, ben_id: bens}
    )
