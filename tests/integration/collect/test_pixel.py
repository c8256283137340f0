"""GET /v1/p.gif (pages without JavaScript) through the real collector and broker."""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie

import aiohttp
import pytest

from pipeline.collect import pages
from tests.integration.collect.conftest import AID, SITE, WRITE_KEY, RunningCollector

pytestmark = pytest.mark.integration

PAGE = "https://www.acme.example/pricing?plan=pro"


def pixel(**query: str) -> str:
    params = {"site_id": SITE, "key": WRITE_KEY, "url": PAGE, **query}
    return "/v1/p.gif?" + "&".join(f"{k}={v}" for k, v in params.items())


def set_cookies(response: aiohttp.ClientResponse) -> list[SimpleCookie]:
    return [SimpleCookie(value) for value in response.headers.getall("Set-Cookie", [])]


def assert_gif(response: aiohttp.ClientResponse) -> None:
    assert response.status == 200
    assert response.content_type == "image/gif"
    assert response.headers["Content-Length"] == "43"
    assert "no-store" in response.headers["Cache-Control"]


async def test_pixel_records_a_page_view_and_sets_the_cookie_when_absent(
    collector: RunningCollector,
) -> None:
    response = await collector.get(pixel(title="Pricing", ref="https://www.google.com/"))

    assert_gif(response)
    assert await response.read() == pages.GIF
    (cookie,) = set_cookies(response)
    morsel = cookie["ma_aid"]
    assert uuid.UUID(morsel.value).version == 4
    assert morsel["max-age"] == "63072000"
    assert morsel["path"] == "/"
    assert morsel["samesite"] == "Lax"
    assert not morsel["domain"]  # host-only: no cookie_domain configured
    assert not morsel["httponly"]  # the tag reads it
    ((message),) = await collector.read("events")
    event = message.value
    assert message.key == morsel.value.encode()
    assert event["type"] == "page_view"
    assert event["anonymous_id"] == morsel.value
    assert event["source"] == "pixel"
    assert (event["url"], event["path"], event["title"]) == (PAGE, "/pricing", "Pricing")
    assert event["referrer"] == "https://www.google.com/"
    assert event["site_id"] == SITE


async def test_pixel_uses_the_existing_cookie_and_sets_none(collector: RunningCollector) -> None:
    response = await collector.get(pixel(), cookie=f"other=1; ma_aid={AID}")

    assert_gif(response)
    assert set_cookies(response) == []
    (event,) = await collector.values("events")
    assert event["anonymous_id"] == AID


async def test_the_query_names_the_visitor_and_the_event_type(collector: RunningCollector) -> None:
    page_aid = str(uuid.uuid4())  # a page that knows its visitor's aid (e.g. from the tag)
    response = await collector.get(pixel(aid=page_aid, type="custom", name="video_play"))

    assert_gif(response)
    (cookie,) = set_cookies(response)
    assert cookie["ma_aid"].value == page_aid  # the browser keeps the page's aid
    ((message),) = await collector.read("events")
    event = message.value
    assert message.key == page_aid.encode()
    assert (event["anonymous_id"], event["type"], event["name"]) == (
        page_aid,
        "custom",
        "video_play",
    )


async def test_the_first_uuid_shaped_of_two_cookies_wins(collector: RunningCollector) -> None:
    second = str(uuid.uuid4())
    response = await collector.get(
        pixel(), cookie=f"ma_aid=undefined; ma_aid={AID}; ma_aid={second}"
    )

    assert set_cookies(response) == []
    (event,) = await collector.values("events")
    assert event["anonymous_id"] == AID


async def test_a_garbage_cookie_is_replaced(collector: RunningCollector) -> None:
    response = await collector.get(pixel(), cookie="ma_aid=[object Object]")

    (cookie,) = set_cookies(response)
    (event,) = await collector.values("events")
    assert event["anonymous_id"] == cookie["ma_aid"].value != "[object Object]"


async def test_the_cookie_goes_on_the_sites_cookie_domain_when_the_collector_is_within_it(
    collector: RunningCollector,
) -> None:
    collector.use_rules(
        ("    fallback_url: https://www.acme.example/", "    cookie_domain: acme.example")
    )
    inside = await collector.get(pixel(), headers={"Host": "collect.acme.example"})
    elsewhere = await collector.get(pixel(), headers={"Host": "collector.other.example"})
    garbage = await collector.get(
        pixel(), cookie="ma_aid=null", headers={"Host": "collect.acme.example:8443"}
    )

    (cookie,) = set_cookies(inside)
    assert cookie["ma_aid"]["domain"] == "acme.example"
    (cookie,) = set_cookies(elsewhere)
    assert not cookie["ma_aid"]["domain"]  # a browser would refuse acme.example there
    # The new domain cookie, and the host-only leftover expired (else both would be sent).
    headers = garbage.headers.getall("Set-Cookie")
    assert len(headers) == 2
    assert any("Domain=acme.example" in h for h in headers)
    assert "ma_aid=; Max-Age=0; Path=/" in headers


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"site_id": "nope"}, "site_id: unknown site"),
        ({"key": "wk_wrong_key_000"}, "key: missing or wrong write key"),
        ({"key": ""}, "key: missing or wrong write key"),
        ({"url": ""}, "query.url: required for page_view"),
        ({"url": "javascript:alert(1)"}, "query.url: expected an absolute http(s) URL"),
        ({"type": "email_click"}, "may only be sent by the collector itself"),
    ],
)
async def test_a_bad_pixel_still_answers_the_gif_and_is_dead_lettered(
    collector: RunningCollector, query: dict[str, str], error: str
) -> None:
    response = await collector.get(pixel(**query))

    assert_gif(response)
    assert await response.read() == pages.GIF
    assert await collector.values("events") == []
    (letter,) = await collector.values("dead-letter")
    assert error in letter["error"]
    assert letter["source"] == "collector:/v1/p.gif"
    assert letter["payload"]["site_id"] == query.get("site_id", SITE)


async def test_a_pixel_without_any_query_still_answers_the_gif(
    collector: RunningCollector,
) -> None:
    response = await collector.get("/v1/p.gif")

    assert_gif(response)
    (letter,) = await collector.values("dead-letter")
    assert letter["error"].startswith("site_id: unknown site")
