"""POST /v1/batch through the real collector and the real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pipeline import codec
from pipeline.models.events import MAX_BATCH_BYTES
from pipeline.rules import parse_rules
from tests.conftest import REPO
from tests.integration.collect.conftest import (
    AID,
    ORIGIN,
    SERVER_KEY,
    WRITE_KEY,
    RunningCollector,
)
from tests.kafka_helpers import TopicReader

pytestmark = pytest.mark.integration


def page_view(**extra: object) -> dict[str, object]:
    return {
        "type": "page_view",
        "anonymous_id": AID,
        "url": "https://www.acme.example/pricing",
        "event_id": str(uuid.uuid4()),
        **extra,
    }


async def test_valid_events_are_accepted_onto_the_events_topic(collector: RunningCollector) -> None:
    events = [page_view(title="Pricing", ts=1767225600000), page_view()]
    response = await collector.post_batch(events)
    assert response.status == 200
    assert await response.json() == {"accepted": 2, "rejected": []}
    async with TopicReader(collector.settings.bootstrap, collector.settings.topic("events")) as r:
        values = await r.wait_for(lambda vs: len(vs) >= 2)
        assert r.keys == [AID.encode(), AID.encode()]
    first = values[0]
    assert first["event_id"] == events[0]["event_id"]
    assert first["path"] == "/pricing"
    assert first["site_id"] == "acme" and first["source"] == "browser"
    assert first["client_ts"] == "2026-01-01T00:00:00Z"
    assert first["received_at"].endswith("Z")


async def test_invalid_events_are_listed_and_dead_lettered_while_valid_ones_pass(
    collector: RunningCollector,
) -> None:
    events = [
        page_view(),
        {"type": "page_view", "anonymous_id": AID},
        {"type": "custom", "anonymous_id": AID},
        "nonsense",
        {"type": "email_sent", "anonymous_id": AID, "contact_id": str(uuid.uuid4())},
        {"type": "page_view", "url": "https://www.acme.example/"},  # no cookie, from a browser
    ]
    response = await collector.post_batch(events)
    body = await response.json()
    assert response.status == 200
    assert body["accepted"] == 1
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert errors[1] == "events[1].url: required for page_view"
    assert errors[2] == "events[2].name: required for custom"
    assert errors[3] == "events[3]: expected a JSON object"
    assert "may only be sent by a server key" in errors[4]
    assert "contact_id: only accepted with a server key" in errors[4]
    assert errors[5] == "events[5].anonymous_id: required from browsers (write key)"
    settings = collector.settings
    async with TopicReader(settings.bootstrap, settings.topic("dead-letter")) as dead:
        letters = await dead.wait_for(lambda vs: len(vs) >= 5)
    assert {d["error"] for d in letters} == set(errors.values())
    assert all(d["source"] == "collector:/v1/batch" for d in letters)
    by_error = {d["error"]: d["payload"] for d in letters}
    assert by_error[errors[1]] == events[1]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"[]", 400, "body must be a JSON object"),
        (b'{"site_id": "acme", "write_key": "wk_acme_public_7d1f3a"}', 400, "events: required"),
        (b'{"site_id": "nope", "events": []}', 400, "unknown site"),
        (b'{"site_id": "acme", "write_key": "wrong", "events": [{}]}', 400, "write_key"),
    ],
)
async def test_unusable_envelopes_get_400_and_a_dead_letter(
    collector: RunningCollector, body: bytes, status: int, message: str
) -> None:
    response = await collector.http.post(
        f"{collector.url}/v1/batch", data=body, headers={"Content-Type": "text/plain"}
    )
    assert response.status == status
    assert message in (await response.json())["error"]
    settings = collector.settings
    async with TopicReader(settings.bootstrap, settings.topic("dead-letter")) as dead:
        letters = await dead.wait_for(lambda vs: len(vs) >= 1)
    assert message in letters[0]["error"]


async def test_oversized_batches_get_413(collector: RunningCollector) -> None:
    too_many = await collector.post_batch([page_view() for _ in range(101)])
    assert too_many.status == 413
    assert "at most 100 events" in (await too_many.json())["error"]
    huge = await collector.post_batch(
        [page_view(properties={"k": "v" * 2000}) for _ in range(0)]
        + [page_view(title="x" * 2000) for _ in range(300)][:100],
        padding="p" * (600 * 1024),
    )
    assert huge.status == 413


def body_of(size: int) -> bytes:
    """A valid one-event batch, padded with an extra envelope field to exactly ``size`` bytes."""
    envelope = {"site_id": "acme", "write_key": WRITE_KEY, "events": [page_view()], "pad": ""}
    bare = len(codec.dumps(envelope))
    return codec.dumps({**envelope, "pad": "p" * (size - bare)})


async def test_the_body_limit_is_512_kib_with_or_without_a_content_length(
    collector: RunningCollector,
) -> None:
    url = f"{collector.url}/v1/batch"
    headers = {"Content-Type": "application/json"}
    limit = MAX_BATCH_BYTES
    assert limit == 512 * 1024
    fits = body_of(limit)
    assert len(fits) == limit
    response = await collector.http.post(url, data=fits, headers=headers)
    assert response.status == 200, await response.text()
    over = body_of(limit + 1)
    response = await collector.http.post(url, data=over, headers=headers)
    assert response.status == 413
    assert "at most 512 KiB" in (await response.json())["error"]

    async def chunked(body: bytes) -> AsyncIterator[bytes]:  # no Content-Length: streamed
        for start in range(0, len(body), 60_000):
            yield body[start : start + 60_000]

    response = await collector.http.post(url, data=chunked(over), headers=headers)
    assert response.status == 413
    assert "at most 512 KiB" in (await response.json())["error"]
    response = await collector.http.post(url, data=chunked(fits), headers=headers)
    assert response.status == 200, await response.text()


async def test_server_key_may_send_server_events_with_a_contact(
    collector: RunningCollector,
) -> None:
    contact = str(uuid.uuid4())
    events = [
        {"type": "email_sent", "contact_id": contact, "campaign_id": "spring"},
        {"type": "email_bounce", "contact_id": contact, "bounce_type": "hard"},
    ]
    response = await collector.post_batch(
        events, headers={"Authorization": f"Bearer {SERVER_KEY}"}, write_key=None
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 2
    settings = collector.settings
    async with TopicReader(settings.bootstrap, settings.topic("events")) as r:
        values = await r.wait_for(lambda vs: len(vs) >= 2)
    assert values[0]["source"] == "server" and values[0]["contact_id"] == contact
    assert r.keys[0] == contact.encode()
    # sent without event_id: the collector gave each a new, distinct UUID
    ids = [v["event_id"] for v in values[:2]]
    assert len(set(ids)) == 2
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


async def test_only_the_collector_makes_email_clicks_opens_and_unsubscribes(
    collector: RunningCollector,
) -> None:
    """CONTRACT §2: not even a server key may send them (they come from signed links)."""
    contact = str(uuid.uuid4())
    events = [{"type": kind, "contact_id": contact, "anonymous_id": AID}
              for kind in ("email_click", "email_open", "unsubscribe")]  # fmt: skip
    response = await collector.post_batch(
        events, headers={"Authorization": f"Bearer {SERVER_KEY}"}, write_key=None
    )
    body = await response.json()
    assert response.status == 200 and body["accepted"] == 0, body
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2]
    assert all(r["error"].startswith(f"events[{r['index']}].type") for r in body["rejected"]), body


async def test_a_wrong_server_key_is_refused(collector: RunningCollector) -> None:
    response = await collector.post_batch([page_view()], headers={"Authorization": "Bearer nope"})
    assert response.status == 400
    assert "not a valid server key" in (await response.json())["error"]


async def test_duplicate_event_ids_pass_through_unchanged(collector: RunningCollector) -> None:
    event = page_view()
    for _ in range(2):
        assert (await collector.post_batch([event])).status == 200
    settings = collector.settings
    async with TopicReader(settings.bootstrap, settings.topic("events")) as r:
        values = await r.wait_for(lambda vs: len(vs) >= 2)
    assert values[0]["event_id"] == values[1]["event_id"] == event["event_id"]


async def test_placeholder_cookie_and_email_are_kept_but_noted(collector: RunningCollector) -> None:
    events = [{"type": "identify", "anonymous_id": "undefined", "email": "test@test.com"}]
    response = await collector.post_batch(events)
    assert (await response.json())["accepted"] == 1
    settings = collector.settings
    async with TopicReader(settings.bootstrap, settings.topic("events")) as r:
        [value] = await r.wait_for(lambda vs: len(vs) >= 1)
    assert "anonymous_id" not in value
    assert "anonymous_id 'undefined' ignored" in value["link_note"]
    assert "email not used for identity" in value["link_note"]


async def test_cors_allows_configured_origins_only(collector: RunningCollector) -> None:
    allowed = await collector.post_batch([page_view()], headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    refused = await collector.post_batch([page_view()], headers={"Origin": "https://evil.example"})
    assert refused.status == 400
    assert "Access-Control-Allow-Origin" not in refused.headers
    preflight = await collector.http.options(
        f"{collector.url}/v1/batch",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


async def test_rate_limit_answers_429_with_retry_after(collector: RunningCollector) -> None:
    text = (REPO / "config" / "rules.yaml").read_text()
    text = text.replace(
        "rate_limit: {per_second: 50, burst: 200}", "rate_limit: {per_second: 0.1, burst: 5}"
    )
    collector.collector.rules.rules = parse_rules(text)
    statuses = [(await collector.post_batch([page_view()])).status for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    limited = await collector.post_batch([page_view()])
    assert limited.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None],
)
async def test_the_body_is_read_as_json_whatever_its_content_type(
    collector: RunningCollector, content_type: str | None
) -> None:
    # sendBeacon and the tag's fetch send text/plain (no CORS preflight); some clients send none.
    body = {"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": [page_view()]}
    data = b"\xef\xbb\xbf" + codec.dumps(body)  # a UTF-8 byte-order mark is tolerated too
    headers = {"Content-Type": content_type} if content_type else {}
    response = await collector.http.post(f"{collector.url}/v1/batch", data=data, headers=headers)
    assert response.status == 200, await response.text()
    assert await response.json() == {"accepted": 1, "rejected": []}
