"""CONTRACT §4–§5 triggers end to end, moving through days with the shared clock file."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pipeline import contact_id_for, links
from tests.conftest import REPO
from tests.integration.worker.conftest import (
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
    page_view,
)

pytestmark = pytest.mark.integration


async def customer(
    stack: Stack, *, status: str = "lead", consent: bool = True
) -> tuple[str, str, str]:
    """A known, consenting contact browsing with a linked cookie: (email, contact_id, aid)."""
    email = new_email("t")
    aid = new_aid()
    await stack.contacts("crm", {"email": email, "consent_email": consent, "crm_status": status})
    contact = str(contact_id_for(email))
    await eventually(
        lambda: stack.query("SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String}", c=contact)
    )
    await stack.send({"type": "identify", "anonymous_id": aid, "email": email})
    await eventually(
        lambda: stack.query("SELECT 1 FROM {db}.identities WHERE anonymous_id = {a:String}", a=aid)
    )
    return email, contact, aid


async def triggers_for(stack: Stack, subject: str, *, settle: float = 2.0) -> list[dict[str, Any]]:
    async with stack.reader("triggers") as reader:
        await reader.settle(settle)
    return [t for t in reader.values if subject in (t.get("contact_id"), t.get("anonymous_id"))]


async def wait_triggers(stack: Stack, subject: str, count: int) -> list[dict[str, Any]]:
    async with stack.reader("triggers") as reader:
        await reader.wait_for(
            lambda vs: (
                len([t for t in vs if subject in (t.get("contact_id"), t.get("anonymous_id"))])
                >= count
            ),
            timeout=30,
        )
        await reader.settle(1.0)
    return [t for t in reader.values if subject in (t.get("contact_id"), t.get("anonymous_id"))]


async def test_pricing_view_offers_a_trial_the_next_day(stack: Stack) -> None:
    email, contact, aid = await customer(stack)
    view = page_view(aid, "/pricing")
    await stack.send(view)
    await asyncio.sleep(2)
    assert [
        t
        for t in await triggers_for(stack, contact, settle=0.5)
        if t["rule"] == "pricing-trial-offer"
    ] == []  # not before the delay
    stack.advance(timedelta(days=1, seconds=1))
    [trigger] = [
        t for t in await wait_triggers(stack, contact, 1) if t["rule"] == "pricing-trial-offer"
    ]
    assert trigger["channel"] == "email" and trigger["email"] == email
    assert trigger["cause_event_ids"] == [view["event_id"]]
    assert trigger["due_at"] < trigger["fired_at"] or trigger["due_at"] == trigger["fired_at"]


async def test_the_readmes_first_scenario_anonymous_pricing_views_offer_a_trial_next_day(
    stack: Stack,
) -> None:
    """README "A first scenario": two anonymous pricing views, the CRM knows Ana, she clicks a
    campaign link in that browser; next day ``pricing-trial-offer`` fires (CONTRACT §5
    "anonymous history and triggers"), caused by the first view."""
    aid, email = new_aid(), new_email("ana")
    first, second = page_view(aid, "/pricing"), page_view(aid, "/pricing/enterprise")
    await stack.send(first, second)
    await stack.contacts(
        "crm",
        {"email": email, "attributes": {"title": "Marketing Manager"}, "consent_email": True},
    )
    contact = str(contact_id_for(email))
    await eventually(
        lambda: stack.query("SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String}", c=contact)
    )
    response = await stack.click(aid, contact, url="https://www.acme.example/pricing")
    assert response.status == 302
    await eventually(
        lambda: stack.query("SELECT 1 FROM {db}.identities WHERE anonymous_id = {a:String}", a=aid)
    )
    await asyncio.sleep(1)
    assert not [
        t for t in await triggers_for(stack, contact, settle=0.5) if t["channel"] == "email"
    ]
    stack.advance(timedelta(days=1, seconds=1))
    [offer] = [
        t for t in await wait_triggers(stack, contact, 1) if t["rule"] == "pricing-trial-offer"
    ]
    # from the anonymous history: the first view in event-time order (one request stamps both
    # with the same received_at, then event_id decides, CONTRACT §3 "Order")
    assert offer["cause_event_ids"] == [min(first["event_id"], second["event_id"])]
    assert offer["email"] == email


async def test_trial_signup_before_the_delay_cancels_the_offer(stack: Stack) -> None:
    _, contact, aid = await customer(stack)
    await stack.send(page_view(aid, "/pricing"))
    stack.advance(timedelta(hours=3))
    await stack.send({"type": "custom", "anonymous_id": aid, "name": "trial_signup"})
    await asyncio.sleep(2)
    stack.advance(timedelta(days=1))
    await asyncio.sleep(3)
    fired = await triggers_for(stack, contact)
    assert [t for t in fired if t["rule"] == "pricing-trial-offer"] == []


async def test_unsubscribe_overnight_suppresses_the_offer(stack: Stack) -> None:
    _, contact, aid = await customer(stack)
    await stack.send(page_view(aid, "/pricing"))
    stack.advance(timedelta(hours=10))
    token = links.sign(
        contact_id=contact,
        purpose="unsubscribe",
        keys=stack.settings.link_keys,
        now=stack.clock.now(),
    )
    response = await stack.http.post(f"{stack.url}/u/{token}", data="List-Unsubscribe=One-Click")
    assert response.status == 200
    await asyncio.sleep(2)
    stack.advance(timedelta(days=1))
    await asyncio.sleep(3)
    assert [t for t in await triggers_for(stack, contact) if t["channel"] == "email"] == []


async def test_contact_in_a_deal_is_not_offered_a_trial(stack: Stack) -> None:
    _, contact, aid = await customer(stack, status="in_deal")
    await stack.send(page_view(aid, "/pricing"))
    stack.advance(timedelta(days=1, seconds=1))
    await asyncio.sleep(3)
    assert [
        t for t in await triggers_for(stack, contact) if t["rule"] == "pricing-trial-offer"
    ] == []


async def test_three_marketing_articles_in_a_week_invite_to_the_webinar(stack: Stack) -> None:
    _, contact, aid = await customer(stack)
    reads = [page_view(aid, f"/blog/marketing/article-{n}") for n in range(3)]
    await stack.send(reads[0])
    stack.advance(timedelta(days=3))
    await stack.send(reads[1])
    stack.advance(timedelta(days=3))  # the third read is six days after the first
    await stack.send(reads[2])
    stack.advance(timedelta(days=1, seconds=1))
    [invite] = [
        t for t in await wait_triggers(stack, contact, 1) if t["rule"] == "marketing-webinar-invite"
    ]
    assert invite["channel"] == "email"
    assert invite["cause_event_ids"] == [r["event_id"] for r in reads]


async def test_three_articles_spread_over_more_than_a_week_do_not_invite(stack: Stack) -> None:
    _, contact, aid = await customer(stack)
    for n in range(3):
        await stack.send(page_view(aid, f"/blog/marketing/slow-{n}"))
        stack.advance(timedelta(days=4))  # never three within 7 days
    stack.advance(timedelta(days=1, seconds=1))
    await asyncio.sleep(2)
    fired = await triggers_for(stack, contact)
    assert [t for t in fired if t["rule"] == "marketing-webinar-invite"] == []


async def test_email_cap_of_two_per_day_holds_under_a_burst(stack: Stack) -> None:
    _, contact, aid = await customer(stack)
    await stack.send(
        page_view(aid, "/pricing"),
        page_view(aid, "/products/widget"),
        page_view(aid, "/blog/marketing/a"),
        page_view(aid, "/blog/marketing/b"),
        page_view(aid, "/blog/marketing/c"),
    )  # three email rules occur at once
    stack.advance(timedelta(days=1, seconds=1))
    fired = await wait_triggers(stack, contact, 2)
    await asyncio.sleep(2)
    fired = await triggers_for(stack, contact)
    assert len([t for t in fired if t["channel"] == "email"]) == 2


async def test_mql_alert_fires_once_despite_a_wobbling_score(stack: Stack) -> None:
    email, contact, aid = await customer(stack)
    await stack.send(
        {
            "type": "form_submit",
            "anonymous_id": aid,
            "email": email,
            "form_id": "demo-request",
        },  # 40
        page_view(aid, "/pricing"),
    )  # 50: crosses the mql threshold
    [alert] = [t for t in await wait_triggers(stack, contact, 1) if t["rule"] == "mql-sales-alert"]
    assert alert["channel"] == "sales" and alert["email"] == email
    stack.advance(timedelta(days=2))  # decays below 50
    await stack.send(page_view(aid, "/pricing"), page_view(aid, "/pricing/x"))  # back above
    await asyncio.sleep(3)
    alerts = [t for t in await triggers_for(stack, contact) if t["rule"] == "mql-sales-alert"]
    assert [a["trigger_id"] for a in alerts] == [alert["trigger_id"]]


async def test_anonymous_reader_of_an_article_three_times_gets_the_web_prompt(stack: Stack) -> None:
    aid = new_aid()
    for _ in range(3):
        await stack.send(page_view(aid, "/blog/growth/data-driven-marketing"))
    [prompt] = await wait_triggers(stack, aid, 1)
    assert prompt["rule"] == "whitepaper-form-prompt" and prompt["channel"] == "web"
    assert prompt["anonymous_id"] == aid and "contact_id" not in prompt and "email" not in prompt


async def test_profile_shows_active_web_triggers_and_segments_without_pii(stack: Stack) -> None:
    aid = new_aid()
    for _ in range(3):
        await stack.send(page_view(aid, "/blog/growth/data-driven-marketing"))
    await wait_triggers(stack, aid, 1)

    async def profile() -> Any:
        response = await stack.http.get(f"{stack.url}/v1/profile", params={"aid": aid})
        assert response.status == 200, await response.text()
        body = await response.json()
        return body if body["web_triggers"] else None

    body = await eventually(profile)
    assert body["identified"] is False and body["segments"] == []
    assert [t["rule"] for t in body["web_triggers"]] == ["whitepaper-form-prompt"]
    assert set(body) == {"anonymous_id", "identified", "segments", "web_triggers"}


async def test_profile_of_an_unknown_cookie_is_empty(stack: Stack) -> None:
    response = await stack.http.get(f"{stack.url}/v1/profile", params={"aid": new_aid()})
    body = await response.json()
    assert response.status == 200
    assert body["identified"] is False and body["web_triggers"] == [] and body["segments"] == []


async def test_a_changed_rules_file_takes_effect_without_a_restart(stack: Stack) -> None:
    path = stack.settings.config
    good = path.read_text()
    rule = '      match: {type: page_view, url: "/careers*"}\n      points: -10\n'
    assert rule in good
    offset = len(stack.worker.text())
    try:
        path.write_text(good.replace(rule, rule.replace("points: -10", "points: 7")))
        await asyncio.to_thread(stack.worker.wait_for_log, "rules reloaded from", 20, offset)
        aid = new_aid()
        await stack.send(page_view(aid, "/careers/engineering"))
        async with stack.reader("scores") as reader:
            found = await reader.wait_for(
                lambda vs: [v for v in vs if v["anonymous_id"] == aid], timeout=30
            )
        [change] = [v for v in found if v["anonymous_id"] == aid]
        assert (change["rule"], change["delta"]) == ("careers-view", 7)
    finally:
        offset = len(stack.worker.text())
        path.write_text(good)
        await asyncio.to_thread(stack.worker.wait_for_log, "rules reloaded from", 20, offset)


async def test_a_rules_file_with_a_typo_is_refused_and_the_old_rules_keep_running(
    stack: Stack,
) -> None:
    path = stack.settings.config
    good = path.read_text()
    broken = good.replace(
        "      delay: 1d\n      cancel_if:", "      delay: 1 day\n      cancel_if:", 1
    )
    line = good[: good.index("      delay: 1d\n      cancel_if:")].count("\n") + 1
    assert broken != good
    offset = len(stack.worker.text())
    try:
        path.write_text(broken)
        expected = f"{path}:{line}: triggers.rules[0].delay: invalid duration '1 day'"
        await asyncio.to_thread(stack.worker.wait_for_log, expected, 20, offset)
        assert "the last good rules stay in force" in stack.worker.text()[offset:]
        # the worker keeps evaluating with the rules it had
        aid = new_aid()
        for _ in range(3):
            await stack.send(page_view(aid, "/blog/growth/data-driven-marketing"))
        [prompt] = await wait_triggers(stack, aid, 1)
        assert prompt["rule"] == "whitepaper-form-prompt"
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(f"{stack.settings.worker_api}/metrics")).text()
        assert "ma_rules_refused_total 1.0" in metrics
    finally:
        path.write_text(good)


async def test_an_anonymous_delayed_trigger_fires_on_time_on_an_idle_pipeline(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Stage 1 fires a cookie's delayed trigger when its partition's watermark passes the due
    time, also when nothing else happens (an idle partition counts as now - MA_ORDER_WAIT)."""
    rules = yaml.safe_load((REPO / "config" / "rules.yaml").read_text())
    rules["triggers"]["rules"].append(
        {
            "id": "come-back-prompt",
            "when": {"event": {"type": "page_view", "url": "/later*"}},
            "delay": "2s",
            "channel": "web",
            "requires": ["anonymous"],
        }
    )
    async with open_stack(
        kafka_bootstrap, tmp_path, rules=yaml.safe_dump(rules, sort_keys=False)
    ) as stack:
        aid = new_aid()
        view = page_view(aid, "/later/offer")
        await stack.send(view)
        async with stack.reader("triggers") as reader:
            await reader.wait_for(
                lambda vs: any(v.get("anonymous_id") == aid for v in vs), timeout=30
            )
        [prompt] = [v for v in reader.values if v.get("anonymous_id") == aid]
        assert prompt["rule"] == "come-back-prompt"
        assert prompt["cause_event_ids"] == [view["event_id"]]
