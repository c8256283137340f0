"""The JavaScript tag (``GET /t.js``) in headless Chromium, against a capture server that stands
in for the collector.

The page is served from ``http://localhost:PORT`` and the tag from ``http://127.0.0.1:PORT``, so
every batch is a real cross-origin request, as on a customer's site: the capture server answers
the way the collector must (text/plain JSON, CORS with credentials for allowed origins).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.browser import Browser, Page, chromium_available
from tests.integration.collect.conftest import BROWSER_UA, RunningCollector
from tests.kafka_helpers import TopicReader

TAG = Path(__file__).resolve().parents[3] / "pipeline" / "collect" / "static" / "t.js"
SITE, WRITE_KEY = "acme", "wk_acme_public_7d1f3a"
TITLE = "Pricing – Acme"  # not ASCII: bodies must be UTF-8
DOMAIN = "acme.test"  # the browser resolves it and its subdomains to the capture server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Chromium at /usr/bin/chromium"),
]

SNIPPET = (
    "<script>window.ma=window.ma||{q:[]};['track','identify','page'].forEach(function(m)"
    "{ma[m]=ma[m]||function(){ma.q.push([m].concat([].slice.call(arguments)))}});</script>"
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script async src="{collector}/t.js{tag_query}" data-site="{site}" data-key="{key}"></script>
{snippet}
{extra}
</head><body>
<form data-ma-form="demo-request" action="/thanks" method="post">
  <input type="email" name="email">
  <input name="company">
  <input type="password" name="password">
  <input type="hidden" name="_token" value="csrf-0b1f">
  <input name="payment">
  <textarea name="notes" data-ma-ignore></textarea>
  <input type="checkbox" name="newsletter" checked>
  <select name="country"><option>DE</option><option selected>FR</option></select>
  <button type="submit">Request a demo</button>
</form>
</body></html>"""

# Calls made before the tag has loaded (the tag is served late on this page).
QUEUED = """<script>
ma.track('pricing_viewed', {plan: 'pro'});
ma.identify('ann@acme.io', {title: 'CTO'});
window.queuedBeforeLoad = !ma.loaded && ma.q.length;
</script>"""


# A browser that refuses storage (privacy settings, sandboxed frames).
NO_STORAGE = """<script>
Object.defineProperty(window, 'localStorage', {
  get() { throw new DOMException('no', 'SecurityError'); },
});
</script>"""


@dataclass
class Recorded:
    method: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class CaptureServer:
    """Serves the tag and a test page; records what reaches ``/v1/batch`` and ``/thanks``."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    form_posts: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0  # answer this many batches with fail_status, then 200
    fail_status: int = 503

    @property
    def collector(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def site(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def allowed_origins(self) -> set[str]:
        return {self.site, f"http://www.{DOMAIN}:{self.port}"}

    def reset(self) -> None:
        self.requests.clear()
        self.form_posts.clear()
        self.fail_next, self.fail_status = 0, 503

    def events(self, status: int = 200) -> list[dict[str, Any]]:
        """Events of the batches answered with ``status``, in arrival order."""
        return [
            event
            for request in self.requests
            if request.method == "POST" and request.status == status
            for event in request.body["events"]
        ]

    def cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin", "")
        if origin not in self.allowed_origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def tag(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("delay", "0")) / 1000)
        return web.Response(
            body=TAG.read_bytes(),
            content_type="application/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def page(self, request: web.Request) -> web.Response:
        queued = "queued" in request.query
        html = PAGE.format(
            title=TITLE,
            collector=request.query.get("collector", self.collector),
            tag_query="?delay=300" if queued else "",
            site=SITE,
            key=WRITE_KEY,
            snippet=SNIPPET,
            extra=(QUEUED if queued else "") + (NO_STORAGE if "nostorage" in request.query else ""),
        )
        return web.Response(text=html, content_type="text/html")

    async def thanks(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.form_posts.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.Response(text="<title>Thanks</title>Thanks!", content_type="text/html")

    async def batch(self, request: web.Request) -> web.Response:
        headers = dict(request.headers)
        if request.method == "OPTIONS":  # a preflight: the tag must never cause one
            self.requests.append(Recorded("OPTIONS", headers, None, 204))
            return web.Response(status=204, headers=self.cors(request))
        body = json.loads(await request.text())
        if self.fail_next:
            self.fail_next -= 1
            self.requests.append(Recorded("POST", headers, body, self.fail_status))
            return web.json_response(
                {"error": "failing on purpose"}, status=self.fail_status, headers=self.cors(request)
            )
        self.requests.append(Recorded("POST", headers, body, 200))
        return web.json_response(
            {"accepted": len(body["events"]), "rejected": []}, headers=self.cors(request)
        )

    async def until(
        self, check: Callable[[CaptureServer], Any], timeout: float = 5, what: str = ""
    ) -> Any:
        """Wait until ``check(self)`` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (value := check(self)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; requests: {self.requests}")
            await asyncio.sleep(0.02)
        return value


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[CaptureServer]:
    capture = CaptureServer()
    app = web.Application()
    app.router.add_get("/t.js", capture.tag)
    app.router.add_get("/page.html", capture.page)
    app.router.add_route("*", "/thanks", capture.thanks)
    app.router.add_post("/v1/batch", capture.batch)
    app.router.add_route("OPTIONS", "/v1/batch", capture.batch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    capture.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield capture
    await runner.cleanup()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with Browser.launch(f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1") as chromium:
        yield chromium


@pytest.fixture
async def page(browser: Browser, server: CaptureServer) -> AsyncIterator[Page]:
    server.reset()
    tab = await browser.new_page()
    yield tab
    await tab.close()


def of_type(kind: str, aid: str | None = None) -> Callable[[CaptureServer], list[Any]]:
    def check(server: CaptureServer) -> list[Any]:
        return [
            event
            for event in server.events()
            if event["type"] == kind and (aid is None or event["anonymous_id"] == aid)
        ]

    return check


async def cookie_aid(page: Page) -> str:
    cookies = await page.evaluate("document.cookie")
    values = [part.split("=", 1)[1] for part in cookies.split("; ") if part.startswith("ma_aid=")]
    assert len(values) == 1, cookies
    return str(values[0])


async def stored_queue(page: Page) -> list[dict[str, Any]]:
    queue: list[dict[str, Any]] = json.loads(
        await page.evaluate("localStorage.getItem('ma_q') || '[]'")
    )
    return queue


async def test_tag_sets_cookie_and_sends_page_view(page: Page, server: CaptureServer) -> None:
    url = f"{server.site}/page.html"
    await page.goto(url)
    (view,) = await server.until(of_type("page_view"), what="a page_view")

    aid = await cookie_aid(page)
    assert uuid.UUID(aid).version == 4
    assert view["anonymous_id"] == aid
    assert view["url"] == url
    assert view["title"] == TITLE
    assert "referrer" not in view
    assert uuid.UUID(view["event_id"]).version == 4
    assert abs(view["ts"] - time.time() * 1000) < 10_000
    cookie = (await page.cookies())["ma_aid"]
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    # Max-Age is two years; Chromium caps every cookie at 400 days.
    assert 399 < (cookie["expires"] - time.time()) / 86400 <= 730
    (request,) = server.requests
    assert request.body["site_id"] == SITE
    assert request.body["write_key"] == WRITE_KEY


async def test_batches_are_text_plain_json_so_no_preflight_is_needed(
    page: Page, server: CaptureServer
) -> None:
    await page.goto(f"{server.site}/page.html")
    await server.until(of_type("page_view"), what="a page_view")

    (request,) = server.requests
    assert request.method == "POST"  # no OPTIONS before it
    assert request.headers["Content-Type"] == "text/plain;charset=UTF-8"
    assert request.headers["Origin"] == server.site  # cross-origin, answered with CORS headers


async def test_form_submit_is_captured_without_blocking_navigation(
    page: Page, server: CaptureServer
) -> None:
    url = f"{server.site}/page.html"
    await page.goto(url)
    await server.until(of_type("page_view"), what="a page_view")
    await page.evaluate(
        """(() => {
        const form = document.querySelector('form');
        form.email.value = ' ann@acme.io ';
        form.company.value = 'Acme GmbH';
        form.password.value = 'hunter2';
        form.payment.value = '4242 4242 4242 4242';
        form.notes.value = 'call me';
        form.querySelector('button').click();
    })()"""
    )

    assert await page.wait_for("location.pathname === '/thanks'")
    (submit,) = await server.until(of_type("form_submit"), what="a form_submit")
    assert submit["form_id"] == "demo-request"
    assert submit["email"] == "ann@acme.io"
    assert submit["url"] == url
    assert submit["anonymous_id"] == (await page.cookies(url))["ma_aid"]["value"]
    # no password, no CSRF token, no card number, no data-ma-ignore field
    assert submit["traits"] == {"company": "Acme GmbH", "newsletter": True, "country": "FR"}
    (posted,) = server.form_posts  # the site's own submit went through untouched
    assert posted["email"] == "ann@acme.io" and posted["password"] == "hunter2"


async def test_track_and_identify_calls_are_sent(page: Page, server: CaptureServer) -> None:
    await page.goto(f"{server.site}/page.html?queued")
    assert await page.evaluate("window.queuedBeforeLoad") == 2
    await server.until(of_type("identify"), what="the queued identify")
    assert await page.evaluate(
        "ma.track('demo_booked', {slot: 'tue'}); ma.identify('bob@acme.io'); ma.loaded"
    )

    await server.until(lambda s: len(of_type("custom")(s)) == 2, what="both track calls")
    aid = await cookie_aid(page)
    events = server.events()
    assert {event["anonymous_id"] for event in events} == {aid}
    assert [(e["type"], e.get("name") or e.get("email")) for e in events[1:]] == [
        ("custom", "pricing_viewed"),
        ("identify", "ann@acme.io"),
        ("custom", "demo_booked"),
        ("identify", "bob@acme.io"),
    ]
    assert events[0]["type"] == "page_view"
    assert events[1]["properties"] == {"plan": "pro"}
    assert events[2]["traits"] == {"title": "CTO"}
    assert events[3]["properties"] == {"slot": "tue"}
    assert len({event["event_id"] for event in events}) == len(events)


async def test_calls_with_bad_arguments_never_throw_into_the_page(
    page: Page, server: CaptureServer
) -> None:
    await page.goto(f"{server.site}/page.html")
    await page.wait_for("window.ma && ma.loaded")
    assert (
        await page.evaluate(
            "ma.track(); ma.track('cyclic', window); ma.identify(null, 'x'); ma.page(42);"
            "ma.q.push(null); ma.q.push(['nope']); ma.track('after', {ok: 1n}); 'still running'"
        )
        == "still running"
    )
    await page.evaluate("ma.track('fine')")
    await server.until(
        lambda s: "fine" in [e.get("name") for e in s.events()], what="the next good call"
    )
    names = [e.get("name") for e in of_type("custom")(server)]
    assert "cyclic" not in names and "after" not in names


async def test_events_buffered_when_the_page_is_left_are_sent_by_beacon(
    page: Page, server: CaptureServer
) -> None:
    await page.goto(f"{server.site}/page.html")
    await server.until(of_type("page_view"), what="a page_view")
    await page.evaluate("ma.track('leaving'); location.href = '/thanks'")

    (leaving,) = await server.until(of_type("custom"), what="the beaconed event")
    assert leaving["name"] == "leaving"


async def test_spa_navigation_sends_one_page_view_per_url_change(
    page: Page, server: CaptureServer
) -> None:
    start = f"{server.site}/page.html"
    await page.goto(start)
    await server.until(of_type("page_view"), what="the first page_view")
    await page.evaluate(
        """(async () => {
        const tick = () => new Promise((r) => setTimeout(r, 20));
        history.pushState({}, '', '/pricing'); document.title = 'Plans'; await tick();
        history.replaceState({}, '', '/pricing'); await tick();        // same URL
        history.pushState({}, '', '/pricing#faq'); await tick();       // an in-page anchor
        history.pushState({}, '', '/pricing?plan=pro'); await tick();
        history.back(); await tick();                                   // popstate
    })()"""
    )

    views = await server.until(lambda s: len(v := of_type("page_view")(s)) >= 4 and v)
    await asyncio.sleep(0.3)
    views = of_type("page_view")(server)
    assert [(v["url"].removeprefix(server.site), v.get("referrer")) for v in views] == [
        ("/page.html", None),
        ("/pricing", start),
        ("/pricing?plan=pro", f"{server.site}/pricing#faq"),
        ("/pricing#faq", f"{server.site}/pricing?plan=pro"),
    ]
    assert views[1]["title"] == "Plans"


async def test_failed_sends_are_retried_with_the_same_event_id(
    page: Page, server: CaptureServer
) -> None:
    server.fail_next = 1
    await page.goto(f"{server.site}/page.html")

    (view,) = await server.until(of_type("page_view"), timeout=5, what="the retried page_view")
    (failed,) = [r for r in server.requests if r.status == 503]
    assert failed.body["events"] == [view]  # the same event, the same event_id
    assert await page.wait_for("!localStorage.getItem('ma_q')")  # a 200 empties the queue


async def test_failed_sends_are_retried_from_memory_when_storage_is_refused(
    page: Page, server: CaptureServer
) -> None:
    server.fail_next = 1
    await page.goto(f"{server.site}/page.html?nostorage")

    (view,) = await server.until(of_type("page_view"), what="the retried page_view")
    assert [r.status for r in server.requests] == [503, 200]
    assert server.requests[0].body["events"] == [view]


async def test_failed_events_wait_in_local_storage_for_the_next_page_load(
    page: Page, server: CaptureServer
) -> None:
    server.fail_next = 1000
    await page.goto(f"{server.site}/page.html")
    await page.wait_for("localStorage.getItem('ma_q')")
    (stored,) = await stored_queue(page)

    server.fail_next = 0
    await page.goto(f"{server.site}/page.html")
    await server.until(lambda s: len(of_type("page_view")(s)) == 2, what="both page views")
    assert stored in server.events()
    assert await page.wait_for("!localStorage.getItem('ma_q')")


async def test_rejected_batches_are_dropped_not_retried(page: Page, server: CaptureServer) -> None:
    server.fail_next, server.fail_status = 1, 400
    await page.goto(f"{server.site}/page.html")
    await server.until(lambda s: s.requests, what="the first batch")

    await asyncio.sleep(1.5)  # past the first retry
    assert [r.status for r in server.requests] == [400]
    assert await stored_queue(page) == []


async def test_existing_cookie_is_reused(page: Page, server: CaptureServer) -> None:
    aid = str(uuid.uuid4())
    await page.set_cookie("ma_aid", aid, server.site)
    await page.goto(f"{server.site}/page.html")

    (view,) = await server.until(of_type("page_view"), what="a page_view")
    assert view["anonymous_id"] == aid
    assert await cookie_aid(page) == aid


async def test_cookie_is_set_on_the_site_domain_so_the_collector_subdomain_sees_it(
    page: Page, server: CaptureServer
) -> None:
    # www.acme.test is plain http and not localhost: no crypto.randomUUID, the fallback runs.
    collector = f"http://collect.{DOMAIN}:{server.port}"
    await page.goto(f"http://www.{DOMAIN}:{server.port}/page.html?collector={collector}")

    (view,) = await server.until(of_type("page_view"), what="a page_view")
    aid = await cookie_aid(page)
    assert uuid.UUID(aid).version == 4
    assert view["anonymous_id"] == aid
    cookie = (await page.cookies())["ma_aid"]
    assert cookie["domain"] == f".{DOMAIN}"
    assert not cookie["secure"]
    (request,) = server.requests
    assert request.headers["Host"] == f"collect.{DOMAIN}:{server.port}"
    assert f"ma_aid={aid}" in request.headers["Cookie"]  # credentials: "include", same site


@pytest.mark.parametrize("garbage", ["undefined", "null", "", "not-a-uuid", "[object Object]"])
async def test_garbage_cookie_is_replaced(page: Page, server: CaptureServer, garbage: str) -> None:
    await page.set_cookie("ma_aid", garbage, server.site)
    await page.goto(f"{server.site}/page.html")

    (view,) = await server.until(of_type("page_view"), what="a page_view")
    aid = await cookie_aid(page)
    assert uuid.UUID(aid).version == 4
    assert view["anonymous_id"] == aid


async def test_bursts_are_split_into_requests_of_at_most_100_events_and_60_kb(
    page: Page, server: CaptureServer
) -> None:
    await page.goto(f"{server.site}/page.html")
    await server.until(of_type("page_view"), what="a page_view")
    await page.evaluate(
        "for (let i = 0; i < 150; i++)"
        "  ma.track('scrolled', {i, pad: 'x'.repeat(i < 75 ? 10 : 1500)})"
    )

    # Within a second: none of them had to wait for a retry (a keepalive request over
    # Chromium's 64 KB in-flight quota is refused by the browser and retried after 1 s).
    await server.until(lambda s: len(of_type("custom")(s)) == 150, timeout=0.9, what="150 events")
    batches = [r for r in server.requests if any(e["type"] == "custom" for e in r.body["events"])]
    assert len(batches) >= 3
    for batch in batches:
        assert len(batch.body["events"]) <= 100
        assert int(batch.headers["Content-Length"]) <= 60_000
    assert [e["properties"]["i"] for e in of_type("custom")(server)] == list(range(150))


async def test_retry_queue_keeps_the_newest_500_events(page: Page, server: CaptureServer) -> None:
    server.fail_next = 1000
    await page.goto(f"{server.site}/page.html")
    await page.wait_for("localStorage.getItem('ma_q')")
    await page.evaluate("for (let i = 0; i < 600; i++) ma.track('clicked', {i})")

    await page.wait_for("JSON.parse(localStorage.getItem('ma_q')).length === 500")
    await asyncio.sleep(0.2)
    queue = await stored_queue(page)
    assert [e["properties"]["i"] for e in queue] == list(range(100, 600))


async def test_stored_events_older_than_7_days_are_dropped(
    page: Page, server: CaptureServer
) -> None:
    await page.goto(f"{server.site}/thanks")  # the same origin, without the tag
    now = int(time.time() * 1000)
    stored = [
        {"type": "custom", "name": "old", "event_id": str(uuid.uuid4()), "ts": now - 8 * 86400_000},
        {"type": "custom", "name": "recent", "event_id": str(uuid.uuid4()), "ts": now - 86400_000},
    ]
    await page.evaluate(f"localStorage.setItem('ma_q', {json.dumps(json.dumps(stored))})")
    await page.goto(f"{server.site}/page.html")

    (recent,) = await server.until(of_type("custom"), what="the stored event")
    assert recent == stored[1]
    assert await page.wait_for("!localStorage.getItem('ma_q')")
    assert "old" not in [e.get("name") for e in server.events()]


@pytest.mark.integration
async def test_the_tag_from_the_real_collector_lands_page_view_and_form_submit_on_events(
    page: Page, server: CaptureServer, collector: RunningCollector
) -> None:
    # The page on http://localhost:PORT, the tag and its batches on the collector's own port.
    collector.use_rules(("allowed_origins: [", f"allowed_origins: [{server.site}, "))
    url = f"{server.site}/page.html"
    await page.goto(f"{url}?collector={collector.url}")
    topic = collector.settings.topic("events")

    async with TopicReader(collector.settings.bootstrap, topic) as events:
        (view,) = await events.wait_for(lambda vs: len(vs) >= 1, timeout=10)
        aid = await cookie_aid(page)
        await page.evaluate(
            """(() => {
            const form = document.querySelector('form');
            form.email.value = 'Ann@Initech.io';
            form.company.value = 'Initech';
            form.querySelector('button').click();
        })()"""
        )
        assert await page.wait_for("location.pathname === '/thanks'")
        values = await events.wait_for(lambda vs: len(vs) >= 2, timeout=10)

    assert uuid.UUID(aid).version == 4
    assert view["type"] == "page_view"
    assert view["anonymous_id"] == aid
    assert view["url"] == f"{url}?collector={collector.url}"
    assert view["title"] == TITLE  # UTF-8 all the way
    assert view["source"] == "browser" and view["site_id"] == SITE
    assert "Chrome" in view["user_agent"]
    (submit,) = [v for v in values if v["type"] == "form_submit"]
    assert submit["anonymous_id"] == aid
    assert submit["email"] == "ann@initech.io"
    assert submit["form_id"] == "demo-request"
    assert submit["traits"] == {
        "company": "Initech",
        "payment": "",
        "newsletter": True,
        "country": "FR",
    }
    assert [r for r in server.requests if r.method == "POST"] == []  # all went to the collector
    assert await collector.values("dead-letter") == []


@pytest.mark.integration
async def test_a_click_cookie_set_by_the_collector_is_the_one_the_tag_uses(
    page: Page, server: CaptureServer, collector: RunningCollector
) -> None:
    # collect.acme.test (the collector) and www.acme.test (the site) share the acme.test cookie.
    site = f"http://www.{DOMAIN}:{server.port}"
    collect = f"http://collect.{DOMAIN}:{collector.url.rsplit(':', 1)[1]}"
    collector.use_rules(
        ("allowed_origins: [", f"allowed_origins: [{site}, "),
        ("    fallback_url: https://www.acme.example/", f"    cookie_domain: {DOMAIN}"),
    )
    await page.send("Network.setUserAgentOverride", {"userAgent": BROWSER_UA})
    token = collector.sign(url=f"{site}/page.html?collector={collect}", campaign_id="spring")

    await page.goto(f"{collect}/c/{token}")  # no cookie yet: the collector sets it

    async with TopicReader(collector.settings.bootstrap, collector.settings.topic("events")) as r:
        values = await r.wait_for(lambda vs: len(vs) >= 2, timeout=10)
    click, view = sorted(values, key=lambda v: v["type"])
    assert (click["type"], view["type"]) == ("email_click", "page_view")
    assert "automated" not in click
    cookies = await page.send("Network.getCookies", {"urls": [site, collect]})
    (cookie,) = [c for c in cookies["cookies"] if c["name"] == "ma_aid"]
    assert cookie["domain"] == f".{DOMAIN}"
    assert click["anonymous_id"] == cookie["value"] == view["anonymous_id"]
