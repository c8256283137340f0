"""What operators and pages fetch: /healthz, /readyz, /metrics and the tag itself."""

from __future__ import annotations

import gzip
import re
import uuid

import aiohttp
import pytest

from pipeline.collect.app import STATIC
from tests.integration.collect.conftest import AID, RunningCollector

pytestmark = pytest.mark.integration


async def test_healthz_answers_200(collector: RunningCollector) -> None:
    response = await collector.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_answers_200_with_the_broker_reachable(collector: RunningCollector) -> None:
    response = await collector.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "broker": "reachable"}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in exposition text (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


async def test_metrics_count_requests_accepted_and_rejected_events_and_produce_latency(
    collector: RunningCollector,
) -> None:
    events: list[object] = [
        {"type": "page_view", "anonymous_id": AID, "url": "https://www.acme.example/"},
        {"type": "page_view", "anonymous_id": AID},
        {"type": "custom", "anonymous_id": AID},
    ]
    assert (await collector.post_batch(events)).status == 200
    await collector.get("/c/not-a-token")

    response = await collector.get("/metrics")

    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    route = {"route": "/v1/batch", "status": "200"}
    assert sample(text, "ma_http_requests_total", **route) == 1
    assert sample(text, "ma_events_accepted_total", site="acme", type="page_view") == 1
    batch = "collector:/v1/batch"
    assert sample(text, "ma_events_rejected_total", source=batch, reason="events[].url") == 1
    assert sample(text, "ma_events_rejected_total", source=batch, reason="events[].name") == 1
    assert sample(text, "ma_events_rejected_total", source="collector:/c", reason="malformed") == 1
    assert sample(text, "ma_produce_latency_seconds_count") >= 1
    assert 'ma_produce_latency_seconds_bucket{le="0.05"}' in text
    assert "ma_broker_errors_total 0.0" in text
    assert sample(text, "ma_http_requests_total", route="/c/{token}", status="302") == 1


async def test_the_tag_is_served_as_javascript(collector: RunningCollector) -> None:
    response = await collector.get("/t.js", headers={"Accept-Encoding": "identity"})

    assert response.status == 200
    assert response.content_type == "application/javascript"
    assert response.charset == "utf-8"
    assert "Content-Encoding" not in response.headers
    assert await response.read() == (STATIC / "t.js").read_bytes()
    assert "max-age=" in response.headers["Cache-Control"]


async def test_the_tag_is_gzip_compressed_when_the_browser_accepts_it(
    collector: RunningCollector,
) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        response = await raw.get(
            f"{collector.url}/t.js", headers={"Accept-Encoding": "gzip, deflate, br"}
        )
        body = await response.read()

    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.content_type == "application/javascript"
    plain = (STATIC / "t.js").read_bytes()
    assert gzip.decompress(body) == plain
    assert len(body) < len(plain) / 2


async def test_a_cached_tag_is_revalidated_with_304(collector: RunningCollector) -> None:
    first = await collector.get("/t.js", headers={"Accept-Encoding": "gzip"})
    etag = first.headers["ETag"]

    again = await collector.get("/t.js", headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    plain = await collector.get(
        "/t.js", headers={"Accept-Encoding": "identity", "If-None-Match": etag}
    )

    assert again.status == 304
    assert await again.read() == b""
    assert plain.status == 200  # another encoding: another entity


async def test_unknown_paths_are_404_not_500(collector: RunningCollector) -> None:
    response = await collector.get(f"/nope/{uuid.uuid4()}")
    assert response.status == 404


@pytest.mark.parametrize(
    "query", ["", "?aid=", "?aid=undefined", "?aid=null", f"?aid={'a' * 129}"],
    ids=["none", "empty", "undefined", "null", "too-long"],
)  # fmt: skip
async def test_profile_needs_a_cookie_id(collector: RunningCollector, query: str) -> None:
    response = await collector.get(f"/v1/profile{query}")

    assert response.status == 400
    assert await response.json() == {"error": "aid: required (the ma_aid cookie value)"}


@pytest.mark.parametrize(
    "aid", ["{c:String}", "${jndi:ldap://x.example/a}", "..", "%2E%2E", "a/b", "<script>", "a b"]
)
async def test_profile_of_an_unusable_cookie_id_is_400_not_503(
    collector: RunningCollector, aid: str
) -> None:
    """Not "retry later": no worker is asked, whether one is up or not (none is, here)."""
    response = await collector.get("/v1/profile", params={"aid": aid})

    assert response.status == 400
    assert (await response.json())["error"].startswith("aid: not a cookie id")


async def test_profile_is_503_with_retry_after_while_the_worker_does_not_answer(
    collector: RunningCollector,
) -> None:
    # this collector's worker API port has no worker behind it
    response = await collector.get(f"/v1/profile?aid={AID}")

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    error = (await response.json())["error"]
    assert error.startswith("profiles are not available right now (") and "retry later" in error
