"""Scoring over simulated days, and contact merge rules, end to end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipeline import contact_id_for
from tests.integration.worker.conftest import Stack, eventually, new_aid, new_email, page_view

pytestmark = pytest.mark.integration


async def score_changes(stack: Stack, contact: str, count: int) -> list[dict[str, Any]]:
    async with stack.reader("scores") as reader:
        await reader.wait_for(
            lambda vs: len([v for v in vs if v.get("contact_id") == contact]) >= count, timeout=30
        )
    return [v for v in reader.values if v.get("contact_id") == contact]


async def test_score_decays_by_half_life_over_simulated_days(stack: Stack) -> None:
    email = new_email("decay")
    contact = str(contact_id_for(email))
    aid = new_aid()
    await stack.send(
        {"type": "form_submit", "anonymous_id": aid, "email": email, "form_id": "demo-request"}
    )  # +40
    [first] = await score_changes(stack, contact, 1)
    assert first["score"] == pytest.approx(40, abs=0.01)
    stack.advance(timedelta(days=30))  # the example rules' half-life
    await stack.send(page_view(aid, "/pricing"))  # +10
    changes = await score_changes(stack, contact, 2)
    assert changes[1]["rule"] == "pricing-view"
    assert changes[1]["score"] == pytest.approx(20 + 10, abs=0.05)
    assert changes[1]["lifecycle_stage"] == "lead"


async def test_lifecycle_reaches_mql_and_does_not_move_back(stack: Stack) -> None:
    email = new_email("mql")
    contact = str(contact_id_for(email))
    aid = new_aid()
    await stack.send(
        {"type": "form_submit", "anonymous_id": aid, "email": email, "form_id": "demo-request"},
        {"type": "custom", "anonymous_id": aid, "name": "trial_signup"},
    )  # 40 + 30
    changes = await score_changes(stack, contact, 2)
    assert changes[-1]["lifecycle_stage"] == "mql"
    stack.advance(timedelta(days=90))  # decays to ~8.75
    await stack.send(page_view(aid, "/blog/x"))
    changes = await score_changes(stack, contact, 3)
    assert changes[-1]["score"] < 50
    assert changes[-1]["lifecycle_stage"] == "mql"


async def test_crm_title_beats_form_title_and_empty_never_overwrites(stack: Stack) -> None:
    email = new_email("merge")
    contact = str(contact_id_for(email))
    aid = new_aid()
    await stack.contacts(
        "crm",
        {
            "email": email,
            "attributes": {"title": "VP Marketing", "company": "Acme"},
            "consent_email": True,
            "crm_status": "lead",
        },
    )
    await stack.send(
        {
            "type": "form_submit",
            "anonymous_id": aid,
            "email": email,
            "form_id": "newsletter",
            "traits": {"title": "intern", "company": "", "phone": "+81 3 1234 5678"},
        }
    )

    async def merged() -> Any:
        rows = await stack.query(
            "SELECT attributes, consent_email, crm_status FROM {db}.contacts "
            "WHERE contact_id = {c:String}",
            c=contact,
        )
        return rows if rows and rows[0][0].get("phone") else None

    [[attributes, consent, status]] = await eventually(merged)
    assert attributes["title"] == "VP Marketing"  # crm ranks above form for title
    assert attributes["company"] == "Acme"  # an empty value never overwrites
    assert attributes["phone"] == "+81 3 1234 5678"
    assert consent == 1 and status == "lead"


async def test_unsubscribe_revokes_consent_at_once(stack: Stack) -> None:
    from pipeline import links

    email = new_email("unsub")
    contact = str(contact_id_for(email))
    await stack.contacts("crm", {"email": email, "consent_email": True})
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String} AND consent_email = 1",
            c=contact,
        )
    )
    token = links.sign(
        contact_id=contact,
        purpose="unsubscribe",
        keys=stack.settings.link_keys,
        now=stack.clock.now(),
    )
    response = await stack.http.post(
        f"{stack.url}/u/{token}",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String} AND consent_email = 0",
            c=contact,
        )
    )
    # a stale CRM sync saying "consented" does not re-subscribe them
    await stack.contacts("crm", {"email": email, "consent_email": True, "attributes": {"x": "1"}})
    rows = await eventually(
        lambda: stack.query(
            "SELECT consent_email FROM {db}.contacts WHERE contact_id = {c:String} "
            "AND attributes['x'] = '1'",
            c=contact,
        )
    )
    assert rows == [[0]]
