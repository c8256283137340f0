"""GET|POST /u/{token}: one-click unsubscribe (RFC 8058) through the real collector and broker."""

from __future__ import annotations

import re

import pytest

from tests.integration.collect.conftest import CONTACT, RunningCollector
from tests.integration.collect.tokens import BAD_TOKENS

pytestmark = pytest.mark.integration

ONE_CLICK = {"data": "List-Unsubscribe=One-Click"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"


async def test_a_one_click_post_unsubscribes_at_once(collector: RunningCollector) -> None:
    token = collector.sign("unsubscribe", campaign_id="spring")

    # Mail providers send the RFC 8058 POST from their servers, with their own user agent.
    response = await collector.get(
        f"/u/{token}", method="POST", user_agent="Google-Unsubscribe", headers=FORM, **ONE_CLICK
    )

    assert response.status == 200
    assert "You are unsubscribed" in await response.text()
    (message,) = await collector.read("events")
    event = message.value
    assert event["type"] == "unsubscribe"
    assert event["contact_id"] == CONTACT
    assert event["campaign_id"] == "spring"
    assert "automated" not in event  # an explicit unsubscribe counts, whoever sends it
    assert message.key == CONTACT.encode()


async def test_a_person_following_the_link_is_unsubscribed(collector: RunningCollector) -> None:
    response = await collector.get(f"/u/{collector.sign('unsubscribe')}")

    assert response.status == 200
    assert "You are unsubscribed" in await response.text()
    (event,) = await collector.values("events")
    assert event["type"] == "unsubscribe"
    assert event["contact_id"] == CONTACT


@pytest.mark.parametrize(
    "user_agent", ["curl/8.5.0", "python-requests/2.32.3", "Python/3.11 aiohttp/3.14.5"]
)
async def test_a_get_from_an_http_library_unsubscribes_at_once(
    collector: RunningCollector, user_agent: str
) -> None:
    """A person's program is not a link scanner (CONTRACT §2: "consent false at once")."""
    response = await collector.get(f"/u/{collector.sign('unsubscribe')}", user_agent=user_agent)

    assert response.status == 200
    assert "You are unsubscribed" in await response.text()
    (event,) = await collector.values("events")
    assert (event["type"], event["contact_id"]) == ("unsubscribe", CONTACT)
    assert "automated" not in event


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_scanner_following_the_link_gets_a_confirmation_and_changes_nothing(
    collector: RunningCollector, method: str
) -> None:
    token = collector.sign("unsubscribe")

    response = await collector.get(f"/u/{token}", method=method, user_agent=SCANNER)

    assert response.status == 200
    assert await collector.values("events") == []
    if method == "GET":
        page = await response.text()
        assert re.search(rf'<form method="post" action="/u/{re.escape(token)}">', page)
        assert 'name="List-Unsubscribe" value="One-Click"' in page


async def test_the_confirmation_button_unsubscribes(collector: RunningCollector) -> None:
    token = collector.sign("unsubscribe")
    await collector.get(f"/u/{token}", user_agent=SCANNER)

    await collector.get(f"/u/{token}", method="POST", headers=FORM, **ONE_CLICK)

    (event,) = await collector.values("events")
    assert event["type"] == "unsubscribe"


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_refused_unsubscribe_token_gets_400_and_a_dead_letter(
    collector: RunningCollector, kind: str, method: str
) -> None:
    make, reason = BAD_TOKENS[kind]

    response = await collector.get(f"/u/{make(collector, 'unsubscribe')}", method=method)

    assert response.status == 400
    assert "This link is not valid" in await response.text()
    assert await collector.values("events") == []
    (letter,) = await collector.values("dead-letter")
    assert letter["source"] == "collector:/u"
    assert letter["error"].startswith(reason)
    assert letter["payload"]["method"] == method
