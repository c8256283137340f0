"""GET /o/{token}.gif: email opens through the real collector and broker; always the GIF."""

from __future__ import annotations

import pytest

from pipeline.collect import pages
from tests.integration.collect.conftest import AID, CONTACT, RunningCollector
from tests.integration.collect.tokens import BAD_TOKENS

pytestmark = pytest.mark.integration

GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


async def test_an_open_is_recorded_and_answers_the_gif(collector: RunningCollector) -> None:
    token = collector.sign("open", campaign_id="spring")

    response = await collector.get(f"/o/{token}.gif", cookie=f"ma_aid={AID}")

    assert response.status == 200
    assert response.content_type == "image/gif"
    assert await response.read() == pages.GIF
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers
    (event,) = await collector.values("events")
    assert event["type"] == "email_open"
    assert event["contact_id"] == CONTACT
    assert event["anonymous_id"] == AID
    assert event["campaign_id"] == "spring"
    assert "automated" not in event


async def test_an_image_proxy_open_is_a_real_open(collector: RunningCollector) -> None:
    await collector.get(f"/o/{collector.sign('open')}.gif", user_agent=GMAIL_PROXY)

    (event,) = await collector.values("events")
    assert "anonymous_id" not in event  # no cookie came with it
    assert "automated" not in event


async def test_an_apple_privacy_prefetch_is_recorded_as_automated(
    collector: RunningCollector,
) -> None:
    await collector.get(f"/o/{collector.sign('open')}.gif", user_agent="Mozilla/5.0")

    (event,) = await collector.values("events")
    assert event["automated"] is True
    assert event["automated_reason"] == "apple_mail_privacy_protection"


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_a_refused_open_token_still_answers_the_gif_and_is_dead_lettered(
    collector: RunningCollector, kind: str
) -> None:
    make, reason = BAD_TOKENS[kind]
    token = make(collector, "open")

    response = await collector.get(f"/o/{token}.gif", cookie=f"ma_aid={AID}")

    assert response.status == 200
    assert await response.read() == pages.GIF
    assert await collector.values("events") == []
    (letter,) = await collector.values("dead-letter")
    assert letter["source"] == "collector:/o"
    assert letter["error"].startswith(reason)
