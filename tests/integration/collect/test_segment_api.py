"""Segment's HTTP tracking API on the real collector and broker (CONTRACT §2 "Segment-compatible
tracking API"): the envelope and single calls, keys, gzip, the mapping of each call, messageId,
and the answers Segment's SDKs read. The SDKs themselves: ``tests/integration/worker/
test_segment_sdks.py``."""

from __future__ import annotations

import base64
import gzip
import uuid
from typing import Any

import pytest

from pipeline import codec
from pipeline.identity import CONTACT_NAMESPACE, user_key
from tests.integration.collect.conftest import (
    AID,
    BROWSER_UA,
    ORIGIN,
    SERVER_KEY,
    WRITE_KEY,
    RunningCollector,
)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


async def post(
    collector: RunningCollector,
    path: str,
    body: object,
    *,
    key: str | None = WRITE_KEY,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    sent = {"User-Agent": "analytics-python/1.4.post1", "Content-Type": "application/json"}
    if key is not None:
        sent["Authorization"] = basic(key)
    sent.update(headers or {})
    data = raw if raw is not None else codec.dumps(body)
    async with collector.http.post(f"{collector.url}{path}", data=data, headers=sent) as response:
        return response.status, codec.loads(await response.read())


async def events_of(collector: RunningCollector, **match: object) -> list[dict[str, Any]]:
    return [
        e
        for e in await collector.values("events")
        if all(e.get(name) == value for name, value in match.items())
    ]


async def test_a_batch_of_every_call_type_maps_onto_our_events(
    collector: RunningCollector,
) -> None:
    aid = str(uuid.uuid4())
    context = {"userAgent": BROWSER_UA, "ip": "203.0.113.9", "library": {"name": "x"}}
    batch = [
        {"type": "page", "anonymousId": aid, "name": "Pricing", "messageId": "m-page",
         "properties": {"title": "Pricing – Acme", "plan": "pro"},
         "context": {**context, "page": {"url": "https://www.acme.example/pricing?x=1",
                                         "referrer": "https://search.example/"}},
         "timestamp": "2026-03-02T09:00:00.000Z"},
        {"type": "screen", "anonymousId": aid, "name": "Settings", "messageId": "m-screen",
         "context": context},
        {"type": "track", "anonymousId": aid, "event": "Trial Started", "messageId": "m-track",
         "properties": {"plan": "pro", "seats": 3}, "context": context},
        {"type": "identify", "anonymousId": aid, "userId": "u-1001", "messageId": "m-identify",
         "traits": {"email": " Ana.Segment@Acme.io ", "title": "Marketing Manager"},
         "context": context},
        {"type": "group", "anonymousId": aid, "groupId": "g-7", "messageId": "m-group",
         "traits": {"name": "Acme Corp", "plan": "enterprise"}, "context": context},
        {"type": "alias", "userId": "u-1001", "previousId": aid, "messageId": "m-alias"},
    ]  # fmt: skip
    status, answer = await post(collector, "/v1/batch", {"batch": batch, "sentAt": "now"})
    assert (status, answer) == (200, {"success": True})
    by_id = {e["event_id"]: e for e in await events_of(collector, site_id="acme")}

    def the(message_id: str) -> dict[str, Any]:
        return by_id[str(uuid.uuid5(CONTACT_NAMESPACE, f"acme:{message_id}"))]

    page = the("m-page")
    assert page["type"] == "page_view" and page["anonymous_id"] == aid
    assert page["url"] == "https://www.acme.example/pricing?x=1" and page["path"] == "/pricing"
    assert page["referrer"] == "https://search.example/" and page["title"] == "Pricing – Acme"
    assert page["name"] == "Pricing" and page["properties"]["plan"] == "pro"
    assert page["client_ts"].startswith("2026-03-02T09:00:00") and page["source"] == "browser"
    assert page["user_agent"] == BROWSER_UA  # context.userAgent, not the SDK's own
    screen = the("m-screen")
    assert (screen["type"], screen["url"], screen["path"]) == (
        "page_view",
        "app://Settings",
        "/Settings",
    )
    track = the("m-track")
    assert (track["type"], track["name"], track["properties"]) == (
        "custom", "Trial Started", {"plan": "pro", "seats": 3},
    )  # fmt: skip
    identify = the("m-identify")
    assert identify["type"] == "identify" and identify["email"] == "ana.segment@acme.io"
    assert identify["user_id"] == "u-1001"
    assert identify["traits"] == {"title": "Marketing Manager", "user_id": "u-1001"}
    group = the("m-group")
    assert group["type"] == "group" and group["traits"] == {"company": "Acme Corp"}
    assert group["properties"]["group_id"] == "g-7"
    alias = the("m-alias")
    assert alias["type"] == "alias" and alias["user_id"] == "u-1001"
    assert alias["properties"]["previous_id"] == aid and "anonymous_id" not in alias
    # a call with only a userId is keyed by its user record
    keys = {m.value["event_id"]: m.key for m in await collector.read("events")}
    assert keys[alias["event_id"]] == user_key("acme", "u-1001").encode()


async def test_single_calls_and_analytics_js_short_paths(collector: RunningCollector) -> None:
    aid = str(uuid.uuid4())
    message_ids = {}
    for path, call in [
        ("/v1/track", {"event": "Signed Up"}),
        ("/v1/page", {"properties": {"url": "https://www.acme.example/"}}),
        ("/v1/identify", {"traits": {"plan": "free"}}),  # no email: kept, links nothing
        ("/v1/t", {"event": "Clicked", "writeKey": WRITE_KEY}),
        ("/v1/p", {"properties": {"url": "https://www.acme.example/docs"}, "writeKey": WRITE_KEY}),
    ]:
        message_id = str(uuid.uuid4())
        message_ids[message_id] = path
        key = None if "writeKey" in call else WRITE_KEY
        body = {**call, "anonymousId": aid, "messageId": message_id}
        assert await post(collector, path, body, key=key) == (200, {"success": True}), path
    got = {e["event_id"]: e["type"] for e in await events_of(collector, anonymous_id=aid)}
    assert got == {
        mid: {"track": "custom", "page": "page_view", "identify": "identify", "t": "custom",
              "p": "page_view"}[path.rsplit("/", 1)[1]]
        for mid, path in message_ids.items()
    }  # fmt: skip


async def test_analytics_js_batches_on_v1_b(collector: RunningCollector) -> None:
    aid = str(uuid.uuid4())
    body = {
        "writeKey": WRITE_KEY,
        "batch": [{"type": "track", "event": "A", "anonymousId": aid, "messageId": "b-1"}],
    }
    assert await post(collector, "/v1/b", body, key=None, headers={"Origin": ORIGIN}) == (
        200,
        {"success": True},
    )
    assert [e["name"] for e in await events_of(collector, anonymous_id=aid)] == ["A"]


async def test_a_gzip_body_is_read_and_a_broken_one_refused(collector: RunningCollector) -> None:
    aid = str(uuid.uuid4())
    batch = {"batch": [{"type": "track", "event": "Zipped", "anonymousId": aid}]}
    zipped = gzip.compress(codec.dumps(batch))
    status, answer = await post(
        collector, "/v1/batch", None, raw=zipped, headers={"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, {"success": True})
    assert [e["name"] for e in await events_of(collector, anonymous_id=aid)] == ["Zipped"]

    status, answer = await post(
        collector, "/v1/batch", None, raw=b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert status == 400 and answer["code"] == "invalid_request"
    assert "Content-Encoding 'gzip'" in answer["message"]
    letters = await collector.values("dead-letter")
    assert any("Content-Encoding" in letter["error"] for letter in letters)


async def test_a_server_key_is_trusted_and_a_missing_or_wrong_key_refused(
    collector: RunningCollector,
) -> None:
    body = {"batch": [{"type": "track", "event": "Paid", "userId": "u-9"}]}
    assert await post(collector, "/v1/batch", body, key=SERVER_KEY) == (200, {"success": True})
    paid = await events_of(collector, name="Paid")
    assert [(e["source"], e["user_id"]) for e in paid] == [("server", "u-9")]

    status, answer = await post(collector, "/v1/batch", body, key=None)
    assert status == 400 and answer["code"] == "invalid_write_key"
    status, answer = await post(collector, "/v1/batch", body, key="wk_nobody_0000")
    assert status == 400 and answer == {
        "code": "invalid_write_key",
        "message": "the write key is not one of a configured site",
    }
    status, answer = await post(collector, "/v1/batch", b"{", key=WRITE_KEY, raw=b"{")
    assert status == 400 and answer["code"] == "invalid_request"


async def test_invalid_calls_are_dead_lettered_and_the_batch_still_succeeds(
    collector: RunningCollector,
) -> None:
    aid = str(uuid.uuid4())
    batch = [
        {"type": "track", "anonymousId": aid, "event": "Kept"},
        {"type": "track", "anonymousId": aid},  # no event name
        {"type": "page", "anonymousId": aid},  # no URL anywhere
        {"type": "track", "event": "Nobody"},  # neither anonymousId nor userId
        {"type": "launch", "anonymousId": aid},
        "not an object",
    ]
    assert await post(collector, "/v1/batch", {"batch": batch}) == (200, {"success": True})
    assert [e["name"] for e in await events_of(collector, anonymous_id=aid)] == ["Kept"]
    errors = [d["error"] for d in await collector.values("dead-letter")]
    for expected in (
        "batch[1].name: required for custom",
        "batch[2].url: required for page_view",
        "batch[3].anonymous_id: give anonymousId or userId",
        "batch[4].type: unknown event type 'launch'",
        "batch[5]: expected a JSON object",
    ):
        assert any(error.startswith(expected) for error in errors), expected


async def test_message_id_makes_a_retry_the_same_event(collector: RunningCollector) -> None:
    aid = str(uuid.uuid4())
    given = str(uuid.uuid4())
    for _ in range(2):
        calls = [
            {"type": "track", "anonymousId": aid, "event": "Retried", "messageId": "ajs-next-42"},
            {"type": "track", "anonymousId": aid, "event": "Uuid", "messageId": given.upper()},
        ]
        assert await post(collector, "/v1/batch", {"batch": calls}) == (200, {"success": True})
    ids = {e["name"]: e["event_id"] for e in await events_of(collector, anonymous_id=aid)}
    assert ids == {
        "Retried": str(uuid.uuid5(CONTACT_NAMESPACE, "acme:ajs-next-42")),
        "Uuid": given,
    }


@pytest.mark.parametrize("size", [101])
async def test_over_the_size_limits_is_413_in_segments_shape(
    collector: RunningCollector, size: int
) -> None:
    batch = [{"type": "track", "anonymousId": AID, "event": "x"}] * size
    status, answer = await post(collector, "/v1/batch", {"batch": batch})
    assert status == 413 and answer["code"] == "payload_too_large"
    big = {"type": "track", "anonymousId": AID, "event": "x", "properties": {"p": "x" * 40_000}}
    status, answer = await post(collector, "/v1/track", big)
    assert status == 413 and answer["code"] == "payload_too_large"


async def test_a_write_key_from_a_page_not_allowed_is_refused(
    collector: RunningCollector,
) -> None:
    call = {"type": "track", "anonymousId": AID, "event": "x"}
    status, answer = await post(
        collector, "/v1/track", call, headers={"Origin": "https://evil.example"}
    )
    assert status == 400 and answer["code"] == "invalid_origin"
    status, answer = await post(collector, "/v1/track", call, headers={"Origin": ORIGIN})
    assert (status, answer) == (200, {"success": True})


async def test_analytics_js_preflight_allows_its_headers(collector: RunningCollector) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
    }
    async with collector.http.options(f"{collector.url}/v1/t", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "x-retry-count"} <= {
        h.strip() for h in allowed.split(",")
    }


async def test_over_the_sites_rate_is_429_in_segments_shape(collector: RunningCollector) -> None:
    collector.use_rules(
        ("rate_limit: {per_second: 50, burst: 200}", "rate_limit: {per_second: 0.01, burst: 1}")
    )
    call = {"type": "track", "anonymousId": AID, "event": "x"}
    assert await post(collector, "/v1/track", call) == (200, {"success": True})
    status, answer = await post(collector, "/v1/track", call)
    assert status == 429 and answer["code"] == "rate_limited"
