"""GET /c/{token}: signed email clicks through the real collector and broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest

from pipeline.collect import pages
from tests.integration.collect.conftest import AID, CONTACT, FALLBACK_URL, RunningCollector
from tests.integration.collect.tokens import BAD_TOKENS, EVIL_URL

pytestmark = pytest.mark.integration

TARGET = "https://www.acme.example/pricing?utm_source=mail&plan=pro"


async def test_a_valid_click_is_recorded_and_redirects_to_the_signed_url(
    collector: RunningCollector,
) -> None:
    token = collector.sign(url=TARGET, campaign_id="spring", link_id="hero")

    response = await collector.get(f"/c/{token}", cookie=f"ma_aid={AID}")

    assert response.status == 302
    assert response.headers["Location"] == TARGET
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in response.headers  # the cookie was there
    (message,) = await collector.read("events")
    click = message.value
    assert message.key == AID.encode()
    assert click["type"] == "email_click"
    assert click["contact_id"] == CONTACT  # from the token
    assert click["anonymous_id"] == AID  # from the cookie
    assert (click["url"], click["path"]) == (TARGET, "/pricing")
    assert click["campaign_id"] == "spring"
    assert click["properties"] == {"link_id": "hero"}
    assert click["source"] == "email"
    assert click["site_id"] == "acme"
    assert "automated" not in click


async def test_a_click_without_a_cookie_sets_one_and_records_it(
    collector: RunningCollector,
) -> None:
    response = await collector.get(f"/c/{collector.sign(url=TARGET)}")

    assert response.status == 302
    morsel = SimpleCookie(response.headers["Set-Cookie"])["ma_aid"]
    assert uuid.UUID(morsel.value).version == 4
    assert (morsel["max-age"], morsel["path"], morsel["samesite"]) == ("63072000", "/", "Lax")
    (click,) = await collector.values("events")
    assert click["anonymous_id"] == morsel.value
    assert click["contact_id"] == CONTACT


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_a_refused_click_token_lands_on_the_fallback_url_never_its_own(
    collector: RunningCollector, kind: str
) -> None:
    make, reason = BAD_TOKENS[kind]
    token = make(collector, "click")

    response = await collector.get(f"/c/{token}", cookie=f"ma_aid={AID}")

    assert response.status == 302
    assert response.headers["Location"] == FALLBACK_URL
    assert "Set-Cookie" not in response.headers
    assert await collector.values("events") == []  # no email_click, no cookie linked
    (letter,) = await collector.values("dead-letter")
    assert letter["source"] == "collector:/c"
    assert letter["error"].startswith(reason)
    assert letter["payload"]["token"] == token


async def test_a_refused_click_token_gets_a_400_page_without_a_fallback_url(
    collector: RunningCollector,
) -> None:
    collector.use_rules(("    fallback_url: https://www.acme.example/", ""))
    for kind in ("tampered", "expired"):
        make, _ = BAD_TOKENS[kind]
        response = await collector.get(f"/c/{make(collector, 'click')}")

        assert response.status == 400
        assert "Location" not in response.headers
        assert response.content_type == "text/html"
        assert "This link is not valid" in await response.text()
        assert EVIL_URL not in await response.text()
    assert await collector.values("events") == []
    assert len(await collector.values("dead-letter")) == 2


async def test_a_head_request_is_recorded_as_automated(collector: RunningCollector) -> None:
    response = await collector.get(f"/c/{collector.sign(url=TARGET)}", method="HEAD")

    assert response.status == 302
    (click,) = await collector.values("events")
    assert click["automated"] is True
    assert click["automated_reason"] == "head_request"


@pytest.mark.parametrize(
    ("user_agent", "reason"),
    [
        ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "scanner_user_agent:Barracuda"),
        ("Microsoft Office Existence Discovery", "scanner_user_agent:Microsoft Office link check"),
        ("Python/3.11 aiohttp/3.14", "scanner_user_agent:aiohttp"),
        ("", "no_user_agent"),
    ],
)
async def test_a_scanner_user_agent_is_recorded_as_automated(
    collector: RunningCollector, user_agent: str, reason: str
) -> None:
    response = await collector.get(f"/c/{collector.sign(url=TARGET)}", user_agent=user_agent)

    assert response.status == 302  # a scanner gets the same answer as a person
    assert response.headers["Location"] == TARGET
    (click,) = await collector.values("events")
    assert click["automated"] is True
    assert click["automated_reason"] == reason
    assert click["contact_id"] == CONTACT  # kept, so analysts see it


async def test_a_click_seconds_after_sending_is_recorded_as_automated(
    collector: RunningCollector,
) -> None:
    just_sent = collector.sign(url=TARGET, sent=timedelta(seconds=2))
    later = collector.sign(url=TARGET, sent=timedelta(seconds=30))

    await collector.get(f"/c/{just_sent}")
    await collector.get(f"/c/{later}")

    events = await collector.values("events")
    reasons = sorted(str(e.get("automated_reason")) for e in events)
    assert reasons == ["None", "clicked_within_10s_of_send"]


async def test_many_links_of_one_mail_clicked_at_once_are_recorded_as_automated(
    collector: RunningCollector,
) -> None:
    tokens = [
        collector.sign(url=f"https://www.acme.example/{link}", campaign_id="spring", link_id=link)
        for link in ("hero", "pricing", "footer", "blog")
    ]

    responses = await asyncio.gather(*(collector.get(f"/c/{t}") for t in tokens))

    assert [r.status for r in responses] == [302] * 4
    events = await collector.values("events")
    flagged = [e for e in events if e.get("automated")]
    assert len(events) == 4
    assert len(flagged) == 2  # the third and fourth distinct link within 2 s
    assert {e["automated_reason"] for e in flagged} == {"many_links_at_once"}


async def test_clicks_of_one_link_spread_out_are_a_person(collector: RunningCollector) -> None:
    token = collector.sign(url=TARGET, campaign_id="spring", link_id="hero")
    for _ in range(3):
        await collector.get(f"/c/{token}")

    events = await collector.values("events")
    assert len(events) == 3
    assert not any(e.get("automated") for e in events)


async def test_the_bad_link_page_is_the_fixed_page(collector: RunningCollector) -> None:
    collector.use_rules(("    fallback_url: https://www.acme.example/", ""))
    response = await collector.get("/c/x.y")
    assert await response.text() == pages.BAD_LINK
