"""Random and hostile input against the real collector and broker: never a 500, never an
exception escaping, and every input accounted for (accepted onto ``ma.events`` or listed and
dead-lettered).

Hypothesis drives each case from a worker thread; the requests run on the test's event loop,
where the collector lives, so a failing example shrinks as usual.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from pipeline import codec
from pipeline.collect import pages
from tests.integration.collect.conftest import (
    AID,
    CRM_KEY,
    FALLBACK_URL,
    SERVER_KEY,
    SITE,
    WRITE_KEY,
    RunningCollector,
)

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
NO_RATE_LIMIT = (
    "rate_limit: {per_second: 50, burst: 200}",
    "rate_limit: {per_second: 1000000, burst: 1000000}",
)


def on_loop() -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a coroutine on the current event loop from Hypothesis's worker thread."""
    loop = asyncio.get_running_loop()

    def run(coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    return run


# -- strategies ------------------------------------------------------------------------------
NASTY_TEXT = [
    "",
    " ",
    "null",
    "undefined",
    "[object Object]",
    "\x00",
    "\u202e",  # right-to-left override
    "\ufeff",
    "9999-12-31T23:59:59-23:59",  # overflows when converted to UTC
    "0001-01-01T00:00:00+23:59",
    "1970-01-01T00:00:00Z",
    "javascript:alert(1)",
    "https://www.acme.example/pricing",
    "http://",
    "https://[::1",
    "ann@acme.io",
    "test@test.com",
    AID,
    "00000000-0000-0000-0000-000000000000",
]
#: Long texts, built lazily so that Hypothesis's reprs stay short.
long_texts = st.sampled_from([("😀", 300), ("é", 5000), ("x", 70_000)]).map(lambda p: p[0] * p[1])
NASTY_NUMBERS = [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -1e308, 0.1, 32503680000000]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(NASTY_TEXT),
    long_texts,
    st.sampled_from(NASTY_NUMBERS),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
FIELDS = [
    "event_id",
    "type",
    "anonymous_id",
    "ts",
    "url",
    "referrer",
    "title",
    "name",
    "properties",
    "email",
    "traits",
    "form_id",
    "contact_id",
    "campaign_id",
    "bounce_type",
]
TYPES = [
    "page_view",
    "custom",
    "form_submit",
    "identify",
    "email_click",
    "email_open",
    "unsubscribe",
    "email_sent",
    "email_bounce",
    "PAGE_VIEW",
    "",
]
field_values = st.one_of(json_values, st.sampled_from(TYPES), st.uuids().map(str))
events = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=len(FIELDS)),
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES), "anonymous_id": st.just(AID)},
        optional={f: field_values for f in FIELDS if f not in ("type", "anonymous_id")},
    ),
    json_values,
)
envelopes = st.one_of(
    st.fixed_dictionaries(
        {
            "site_id": st.one_of(st.just(SITE), json_values),
            "events": st.one_of(st.lists(events, max_size=12), json_values),
        },
        optional={"write_key": st.one_of(st.just(WRITE_KEY), json_values)},
    ),
    json_values,
)
NASTY_BODIES: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "bom only": lambda: b"\xef\xbb\xbf",
    "lone surrogate": lambda: b'{"site_id": "acme", "events": ["\\ud800"]}',
    "lone surrogate in a valid envelope": lambda: (
        b'{"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": [{"type": '
        b'"custom", "anonymous_id": "a", "name": "\\udfff"}]}'
    ),
    "deep arrays": lambda: b"[" * 5000 + b"]" * 5000,
    "deep objects": lambda: (
        b'{"site_id": "acme", "events": [' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"]}"
    ),
    "events nested 1,000 arrays deep": lambda: (
        b'{"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": '
        + b"[" * 1000
        + b"]" * 1000
        + b"}"
    ),
    "properties nested 1,000 objects deep": lambda: (
        b'{"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": [{"type": '
        b'"custom", "anonymous_id": "a", "name": "n", "properties": '
        + b'{"a":' * 1000
        + b"1"
        + b"}" * 1000
        + b"}]}"
    ),
    "huge float": lambda: b'{"site_id": "acme", "events": 1e999}',
    "huge integer": lambda: b'{"site_id": "acme", "events": [18446744073709551616]}',
    "101 events": lambda: (
        b'{"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": ['
        + b'{"type": "custom", "anonymous_id": "a", "name": "n"},' * 100
        + b"{}]}"
    ),
    "600 KiB": lambda: b"x" * (600 * 1024),
}
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(sorted(NASTY_BODIES)).map(lambda name: NASTY_BODIES[name]()),
)
#: Times that overflow once converted to UTC (found by this test).
OVERFLOWING_TIMES = {
    "site_id": SITE,
    "write_key": WRITE_KEY,
    "events": [
        {"type": "custom", "name": "n", "anonymous_id": AID, "ts": "9999-12-31T23:59:59-23:59"},
        {"type": "custom", "name": "n", "anonymous_id": AID, "ts": "0001-01-01T00:00:00+23:59"},
    ],
}
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            ["text/plain;charset=UTF-8", "application/json", "application/x-www-form-urlencoded"]
        ),
        "Authorization": st.sampled_from(
            [f"Bearer {SERVER_KEY}", "Bearer nope", "Basic Zm9vOmJhcg==", "Bearer", ""]
        ),
        "Origin": st.sampled_from(["http://localhost:8000", "https://evil.example", "null"]),
    },
)


@dataclass
class Tally:
    """What the collector said it did, to compare with what is on the topics."""

    accepted: int = 0
    dead_letters: int = 0


async def no_server_errors(collector: RunningCollector) -> None:
    text = await (await collector.get("/metrics")).text()
    assert 'status="500"' not in text


# -- POST /v1/batch ---------------------------------------------------------------------------
async def post_and_check(
    collector: RunningCollector, body: bytes, request_headers: dict[str, str], tally: Tally
) -> None:
    response = await collector.http.post(
        f"{collector.url}/v1/batch", data=body, headers=request_headers
    )
    answer = codec.loads(await response.read())
    assert response.status in (200, 400, 413), (response.status, answer)
    if response.status != 200:
        assert isinstance(answer["error"], str) and answer["error"]
        tally.dead_letters += 1
        return
    envelope = codec.loads(body.removeprefix(b"\xef\xbb\xbf"))
    sent = envelope["events"]
    rejected = answer["rejected"]
    assert answer["accepted"] + len(rejected) == len(sent)
    indexes = [r["index"] for r in rejected]
    assert indexes == sorted(set(indexes))
    assert all(0 <= i < len(sent) for i in indexes)
    assert all(r["error"].startswith(f"events[{r['index']}]") for r in rejected)
    tally.accepted += answer["accepted"]
    tally.dead_letters += len(rejected)


async def check_topics(collector: RunningCollector, tally: Tally) -> None:
    await no_server_errors(collector)
    assert len(await collector.read("events")) == tally.accepted
    assert len(await collector.read("dead-letter")) == tally.dead_letters


async def test_random_batch_envelopes_are_answered_and_accounted_for(
    collector: RunningCollector,
) -> None:
    collector.use_rules(NO_RATE_LIMIT)
    tally, run = Tally(), on_loop()

    @FUZZ
    @given(envelope=envelopes, request_headers=headers)
    @example(envelope=OVERFLOWING_TIMES, request_headers={})
    def case(envelope: Any, request_headers: dict[str, str]) -> None:
        run(post_and_check(collector, codec.dumps(envelope), request_headers, tally))

    await asyncio.to_thread(case)
    await check_topics(collector, tally)


async def test_random_bytes_bodies_are_answered_and_accounted_for(
    collector: RunningCollector,
) -> None:
    collector.use_rules(NO_RATE_LIMIT)
    tally, run = Tally(), on_loop()

    @FUZZ
    @given(body=raw_bodies, request_headers=headers)
    def case(body: bytes, request_headers: dict[str, str]) -> None:
        run(post_and_check(collector, body, request_headers, tally))

    await asyncio.to_thread(case)
    await check_topics(collector, tally)


async def test_each_nasty_body_is_answered_and_accounted_for(collector: RunningCollector) -> None:
    """Each of them once, not only when the random draw picks it (deep nesting was a 500)."""
    tally = Tally()
    for name in sorted(NASTY_BODIES):
        await post_and_check(collector, NASTY_BODIES[name](), {}, tally)
    await check_topics(collector, tally)


SEGMENT_PATHS = ["/v1/batch", "/v1/track", "/v1/b"]  # the envelope, a single call, analytics.js


async def test_each_nasty_body_on_segments_api_is_answered_in_its_shape(
    collector: RunningCollector,
) -> None:
    """Segment's endpoints, with an SDK's Basic-auth key: Segment's answer, never a 5xx, and a
    dead letter for every refusal."""
    key = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    refused = 0
    for path in SEGMENT_PATHS:
        for name in sorted(NASTY_BODIES):
            response = await collector.http.post(
                f"{collector.url}{path}",
                data=NASTY_BODIES[name](),
                headers={"Authorization": f"Basic {key}", "Content-Type": "application/json"},
            )
            answer = codec.loads(await response.read())
            assert response.status in (200, 400, 413), (path, name, response.status, answer)
            if response.status == 200:
                assert answer == {"success": True}, (path, name)
            else:
                assert {"code", "message"} <= set(answer) and answer["message"], (path, name)
                refused += 1
    assert len(await collector.values("dead-letter")) >= refused
    await no_server_errors(collector)


# -- POST /v1/contacts ------------------------------------------------------------------------
CONTACT_FIELDS = ["email", "attributes", "consent_email", "crm_status", "crm_id", "created_at"]
contact_values = st.one_of(
    json_values, st.sampled_from(["ann@initech.io", "Bo@Globex.IO ", "test@test.com"])
)
contacts_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "source": st.one_of(st.just("crm"), json_values),
            "contacts": st.one_of(
                st.lists(
                    st.one_of(
                        st.dictionaries(st.sampled_from(CONTACT_FIELDS), contact_values),
                        json_values,
                    ),
                    max_size=8,
                ),
                json_values,
            ),
        }
    ),
    json_values,
)


async def test_random_contacts_bodies_are_answered_and_accounted_for(
    collector: RunningCollector,
) -> None:
    tally, run = Tally(), on_loop()

    async def post(body: Any) -> None:
        response = await collector.http.post(
            f"{collector.url}/v1/contacts",
            data=codec.dumps(body),
            headers={"Authorization": f"Bearer {CRM_KEY}"},
        )
        answer = codec.loads(await response.read())
        assert response.status in (200, 400, 413), (response.status, answer)
        if response.status != 200:
            tally.dead_letters += 1
            return
        assert answer["accepted"] + len(answer["rejected"]) == len(body["contacts"])
        tally.accepted += answer["accepted"]
        tally.dead_letters += len(answer["rejected"])

    @FUZZ
    @given(body=contacts_bodies)
    def case(body: Any) -> None:
        run(post(body))

    await asyncio.to_thread(case)
    await no_server_errors(collector)
    assert len(await collector.read("contact-updates")) == tally.accepted
    assert len(await collector.read("dead-letter")) == tally.dead_letters


# -- GET /v1/p.gif ----------------------------------------------------------------------------
query_values = st.one_of(st.text(max_size=60), st.sampled_from([*NASTY_TEXT, SITE, WRITE_KEY]))
raw_query_parts = st.sampled_from(
    ["%ZZ", "%", "%ED%A0%80", "%00", "%C3%28", "%FF%FE", "+", "&&", "==", ";", "%2F%2E%2E"]
)


async def test_random_pixel_queries_always_answer_the_gif(collector: RunningCollector) -> None:
    collector.use_rules(NO_RATE_LIMIT)
    tally, run = Tally(), on_loop()

    async def fetch(url: URL, cookie: str | None) -> None:
        request_headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126"}
        if cookie is not None and cookie.isprintable():
            request_headers["Cookie"] = cookie
        response = await collector.http.get(url, headers=request_headers)
        assert response.status == 200
        assert await response.read() == pages.GIF
        tally.dead_letters += 1  # one record per pixel: the event or its dead letter

    @FUZZ
    @given(
        query=st.dictionaries(
            st.sampled_from(["site_id", "key", "aid", "type", "url", "ref", "title", "name", "x"]),
            query_values,
        ),
        raw=st.lists(raw_query_parts, max_size=4),
        cookie=st.one_of(st.none(), st.text(max_size=80), st.just(f"ma_aid={AID}; ma_aid=x")),
    )
    def case(query: dict[str, str], raw: list[str], cookie: str | None) -> None:
        url = URL(f"{collector.url}/v1/p.gif").with_query(query)
        if raw:
            url = URL(f"{url}{'&' if query else '?'}{'&'.join(raw)}={''.join(raw)}", encoded=True)
        run(fetch(url, cookie))

    await asyncio.to_thread(case)
    await no_server_errors(collector)
    records = len(await collector.read("events")) + len(await collector.read("dead-letter"))
    assert records == tally.dead_letters


# -- /c/ /o/ /u/ tokens -----------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: aiohttp's limit on a request's URL ("Got more than 8190 bytes when reading" the URL): a
#: longer one is refused by its parser before any route, a shorter one reaches the routes. (A
#: margin below it once left paths of 8,171 to 8,190 bytes dead-lettered but not counted.)
MAX_REQUEST_LINE = 8190
TOKEN_CHARS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=%+/")
tokens = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=80),
    st.tuples(st.binary(max_size=120), st.binary(max_size=40)).map(
        lambda p: f"{b64(p[0])}.{b64(p[1])}"
    ),
    st.tuples(json_values, st.binary(max_size=32)).map(
        lambda p: f"{b64(codec.dumps(p[0]))}.{b64(p[1])}"
    ),
    # Over links.MAX_TOKEN_LENGTH; some over the HTTP server's 8 KiB request line too.
    st.integers(min_value=4000, max_value=9000).map(lambda n: "a" * n + ".b"),
)


async def test_random_tokens_never_redirect_elsewhere_nor_fail(
    collector: RunningCollector,
) -> None:
    tally, run = Tally(), on_loop()
    genuine = collector.sign("click")

    async def follow(token: str, route: str, method: str) -> None:
        path = route.format(URL.build(path=token).raw_path.replace("/", "%2F"))
        url = URL(f"{collector.url}{path}", encoded=True)
        if len(path) > MAX_REQUEST_LINE:  # refused by the HTTP server itself, before any route
            with contextlib.suppress(aiohttp.ClientResponseError):  # it also closes at once
                async with collector.http.request(method, url) as refused:
                    assert refused.status == 400
            return
        response = await collector.http.request(method, url, allow_redirects=False)
        await response.read()
        assert response.status != 500
        if response.status == 404:  # no route matched (e.g. an empty token): nothing recorded
            return
        tally.dead_letters += 1
        if route.startswith("/c/"):
            assert response.status == 302
            assert response.headers["Location"] == FALLBACK_URL
        elif route.startswith("/o/"):
            assert response.status == 200
            assert response.content_type == "image/gif"
        else:
            assert response.status == 400

    @FUZZ
    @given(
        token=st.one_of(
            tokens,
            st.tuples(st.integers(0, len(genuine) - 1), st.sampled_from(TOKEN_CHARS)).map(
                lambda p: genuine[: p[0]] + p[1] + genuine[p[0] + 1 :]
            ),
        ),
        route=st.sampled_from(["/c/{}", "/o/{}.gif", "/u/{}"]),
        method=st.sampled_from(["GET", "POST", "HEAD"]),
    )
    # URLs of exactly the parser's limit (reaches the route) and one byte over (refused)
    @example(token="a" * (MAX_REQUEST_LINE - 3), route="/c/{}", method="GET")
    @example(token="a" * (MAX_REQUEST_LINE - 2), route="/c/{}", method="GET")
    def case(token: str, route: str, method: str) -> None:
        if method == "POST" and not route.startswith("/u/"):
            method = "GET"
        if token != genuine:
            run(follow(token, route, method))

    await asyncio.to_thread(case)
    await check_topics(collector, tally)
