"""CONTRACT §3 end to end: collector → broker → worker → ma.identities / ma.scores / ClickHouse."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from pipeline import contact_id_for
from tests.integration.worker.conftest import Stack, eventually, new_aid, new_email, page_view

pytestmark = pytest.mark.integration


async def decisions(stack: Stack, aid: str, count: int) -> list[dict[str, Any]]:
    async with stack.reader("identities") as reader:
        await reader.wait_for(
            lambda vs: len([v for v in vs if v["anonymous_id"] == aid]) >= count, timeout=30
        )
        await reader.settle(1.0)
    return [v for v in reader.values if v["anonymous_id"] == aid]


async def identify(stack: Stack, aid: str, email: str, kind: str = "identify") -> None:
    event: dict[str, Any] = {"type": kind, "anonymous_id": aid, "email": email}
    if kind == "form_submit":
        event["form_id"] = "newsletter"
    await stack.send(event)


async def test_forwarded_click_does_not_relink_cookie_but_counts_for_the_recipient(
    stack: Stack,
) -> None:
    aid = new_aid()
    ana, bo = new_email("ana"), new_email("bo")
    await identify(stack, aid, ana)
    [linked] = await decisions(stack, aid, 1)
    assert linked["contact_id"] == str(contact_id_for(ana))
    bo_id = str(contact_id_for(bo))
    assert (await stack.click(aid, bo_id)).status == 302
    clicks = await eventually(
        lambda: stack.query(
            "SELECT contact_id FROM {db}.events "
            "WHERE anonymous_id = {a:String} AND type = 'email_click'",
            a=aid,
        )
    )
    assert clicks == [[bo_id]]  # the click counts for the mail's recipient
    assert await decisions(stack, aid, 1) == [linked]  # and the cookie stays with Ana


async def test_second_device_joins_the_contact_via_a_form(stack: Stack) -> None:
    phone, laptop = new_aid(), new_aid()
    email = new_email("cara")
    contact = str(contact_id_for(email))
    assert (await stack.click(phone, contact)).status == 302
    await identify(stack, laptop, email, kind="form_submit")
    assert (await decisions(stack, phone, 1))[0]["contact_id"] == contact
    assert (await decisions(stack, laptop, 1))[0]["contact_id"] == contact
    cookies = await eventually(
        lambda: stack.query(
            "SELECT DISTINCT anonymous_id FROM {db}.contact_events WHERE contact_id = {c:String} "
            "ORDER BY anonymous_id",
            c=contact,
        )
    )
    assert sorted(r[0] for r in cookies) == sorted([phone, laptop])


async def test_shared_computer_form_by_someone_else_relinks_without_merging(stack: Stack) -> None:
    aid = new_aid()
    dan, eve = new_email("dan"), new_email("eve")
    await stack.send(page_view(aid, "/pricing"))
    await identify(stack, aid, dan)
    await stack.send(page_view(aid, "/blog/one"))
    await identify(stack, aid, eve, kind="form_submit")
    await stack.send(page_view(aid, "/blog/two"))
    first, second = await decisions(stack, aid, 2)
    dan_id, eve_id = str(contact_id_for(dan)), str(contact_id_for(eve))
    assert (first["contact_id"], first["previous_contact_id"]) == (dan_id, None)
    assert (second["contact_id"], second["previous_contact_id"], second["reason"]) == (
        eve_id,
        dan_id,
        "form_submit",
    )

    async def histories() -> Any:
        rows = await stack.query(
            "SELECT contact_id, path FROM {db}.contact_events WHERE anonymous_id = {a:String} "
            "AND type = 'page_view'",
            a=aid,
        )
        return rows if len(rows) >= 3 else None

    rows = await eventually(histories)
    by_contact: dict[str, set[str]] = {}
    for contact, path in rows:
        by_contact.setdefault(contact, set()).add(path)
    assert by_contact == {dan_id: {"/pricing", "/blog/one"}, eve_id: {"/blog/two"}}


async def test_kiosk_cookie_stops_linking_after_too_many_relinks(stack: Stack) -> None:
    aid = new_aid()
    people = [new_email(f"k{i}") for i in range(6)]
    for email in people:  # the example rules allow 3 re-links a day
        await identify(stack, aid, email, kind="form_submit")
    found = await decisions(stack, aid, 5)
    assert [d["reason"] for d in found] == ["form_submit"] * 4 + ["cookie_relink_limit"]
    assert found[-1]["contact_id"] is None
    assert found[-1]["previous_contact_id"] == str(contact_id_for(people[3]))
    await stack.send(page_view(aid, "/after"))
    rows = await eventually(
        lambda: stack.query(
            "SELECT contact_id FROM {db}.events "
            "WHERE anonymous_id = {a:String} AND path = '/after'",
            a=aid,
        )
    )
    assert rows == [[""]]  # flagged: anonymous from now on
    assert await decisions_counted(stack, "identity_flag") >= 1


async def decisions_counted(stack: Stack, what: str) -> float:
    """``ma_worker_decisions_total{what=…}`` on the worker's ``/metrics``."""
    async with aiohttp.ClientSession() as http:
        metrics = await (await http.get(f"{stack.settings.worker_api}/metrics")).text()
    found = re.search(rf'^ma_worker_decisions_total\{{what="{what}"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_contact_keeps_at_most_its_cookie_limit(stack: Stack) -> None:
    email = new_email("many-devices")
    cookies = [new_aid() for _ in range(21)]  # the example rules keep 20 cookies per contact
    for aid in cookies:
        await identify(stack, aid, email)

    def evictions(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            v
            for v in values
            if v["anonymous_id"] in cookies and v["reason"] == "contact_cookie_limit"
        ]

    async with stack.reader("identities") as reader:
        await reader.wait_for(evictions, timeout=30)
        await reader.settle(1.0)
    [evicted] = evictions(reader.values)  # one of the 21, the one stage 2 saw linked first
    assert evicted["contact_id"] is None
    assert evicted["previous_contact_id"] == str(contact_id_for(email))
    assert await decisions_counted(stack, "identity_evicted") >= 1


async def test_placeholder_email_and_undefined_cookie_never_link(stack: Stack) -> None:
    aid = new_aid()
    await stack.send(
        {"type": "identify", "anonymous_id": aid, "email": "test@test.com"},
        {"type": "form_submit", "anonymous_id": aid, "email": "noreply@acme.io"},
        {"type": "identify", "anonymous_id": "undefined", "email": new_email("u")},
    )
    marker = page_view(aid, "/marker")
    await stack.send(marker)
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.events WHERE event_id = {e:String}", e=marker["event_id"]
        )
    )
    assert (
        await stack.query(
            "SELECT * FROM {db}.identities WHERE anonymous_id IN ({a:String}, 'undefined')", a=aid
        )
        == []
    )


async def test_scanner_click_is_kept_but_neither_links_nor_scores(stack: Stack) -> None:
    aid = new_aid()
    contact = str(contact_id_for(new_email("scanned")))
    response = await stack.click(
        aid, contact, user_agent="Mozilla/5.0 (compatible; Barracuda Sentinel)"
    )
    assert response.status == 302
    rows = await eventually(
        lambda: stack.query(
            "SELECT automated, automated_reason FROM {db}.events WHERE anonymous_id = {a:String}",
            a=aid,
        )
    )
    assert rows[0][0] == 1 and rows[0][1].startswith("scanner_user_agent")
    assert (
        await stack.query("SELECT * FROM {db}.identities WHERE anonymous_id = {a:String}", a=aid)
        == []
    )
    assert (
        await stack.query(
            "SELECT * FROM {db}.score_changes WHERE contact_id = {c:String}", c=contact
        )
        == []
    )


async def test_the_same_event_twice_scores_once(stack: Stack) -> None:
    aid = new_aid()
    event = page_view(aid, "/pricing")
    await stack.send(event)
    await stack.send(event)
    marker = page_view(aid, "/marker")
    await stack.send(marker)
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.events WHERE event_id = {e:String}", e=marker["event_id"]
        )
    )
    changes = await eventually(
        lambda: stack.query(
            "SELECT rule, delta FROM {db}.score_changes WHERE anonymous_id = {a:String}", a=aid
        )
    )
    assert changes == [["pricing-view", 10.0]]
    assert (
        await stack.query(
            "SELECT count() FROM {db}.events WHERE event_id = {e:String}", e=event["event_id"]
        )
    ) == [[1]]
