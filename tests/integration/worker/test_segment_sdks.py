"""Segment's own SDKs, unmodified, against the real collector, broker, worker and chDB (CONTRACT §2
"Segment-compatible tracking API"): analytics-python (PyPI), @segment/analytics-node and
@segment/analytics-next (analytics.js, in headless Chromium) from ``tests/sdk`` (npm; ``make
test`` installs them). Each sends page, track, identify with an email and a userId, a later
call with only the userId, in batches; the events must be on ``ma.events`` with our types,
link the cookie, score, and land in ClickHouse. A retry by an SDK after a 503 is one event.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline import contact_id_for
from pipeline.kafka import BrokerUnavailable, Record
from tests.browser import Browser, chromium_available
from tests.conftest import REPO, free_port
from tests.integration.worker.conftest import (
    WRITE_KEY,
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
)

pytestmark = pytest.mark.integration

SDK = REPO / "tests" / "sdk"
NODE_MODULES = SDK / "node_modules" / "@segment"
NODE = shutil.which("node")


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    # analytics.js runs on a page of its own origin (a loopback port chosen at random)
    rules = (REPO / "config" / "rules.yaml").read_text()
    origins = (
        "allowed_origins: [http://localhost:8000, http://127.0.0.1:8000, https://www.acme.example]"
    )
    assert origins in rules
    rules = rules.replace(origins, 'allowed_origins: ["*"]')
    async with open_stack(kafka_bootstrap, tmp_path_factory.mktemp("sdk"), rules=rules) as s:
        yield s


async def rows(stack: Stack, sql: str, count: int, **parameters: Any) -> list[list[Any]]:
    """Rows of ``sql`` once there are ``count`` of them."""

    found: list[list[Any]] = []

    async def enough() -> list[list[Any]] | None:
        nonlocal found
        found = await stack.query(sql, **parameters)
        return found if len(found) >= count else None

    try:
        result: list[list[Any]] = await eventually(enough, timeout=60)
    except TimeoutError:
        raise AssertionError(f"{count} row(s) expected, found {found}: {sql}") from None
    return result


async def linked_to(stack: Stack, aid: str) -> list[tuple[str, str]]:
    found = await rows(
        stack,
        "SELECT contact_id, reason FROM {db}.identities WHERE anonymous_id = {a:String}",
        1,
        a=aid,
    )
    return [(r[0], r[1]) for r in found]


async def check_the_person(stack: Stack, aid: str, user_id: str, email: str, later: int) -> None:
    """What every SDK's calls must have made of ``aid``/``user_id``/``email``: the cookie linked
    by the identify, the contact's user_id attribute, a score, and every event in ClickHouse
    with its contact (``later`` events sent with only the userId)."""
    contact = str(contact_id_for(email))
    assert (contact, "identify") in await linked_to(stack, aid)
    # the identify and every later call with the userId are the contact's
    events = await rows(
        stack,
        "SELECT type FROM {db}.contact_events "
        "WHERE user_id = {u:String} AND contact_id = {c:String}",
        1 + later,
        u=user_id,
        c=contact,
    )
    assert {r[0] for r in events} >= {"identify", "custom"}
    assert await stack.query(
        "SELECT count() FROM {db}.contact_events "
        "WHERE user_id = {u:String} AND contact_id != {c:String}",
        u=user_id,
        c=contact,
    ) == [[0]]
    anonymous = await rows(
        stack,
        "SELECT type FROM {db}.contact_events WHERE contact_id = {c:String} "
        "AND anonymous_id = {a:String}",
        3,
        c=contact,
        a=aid,
    )
    assert {"page_view", "custom", "identify"} <= {r[0] for r in anonymous}
    attributes = await rows(
        stack,
        "SELECT attributes['user_id'], attributes['title'] FROM {db}.contacts "
        "WHERE contact_id = {c:String} AND attributes['user_id'] != ''",
        1,
        c=contact,
    )
    assert attributes[0] == [user_id, "Marketing Manager"]
    scored = await rows(
        stack,
        "SELECT score FROM {db}.scores WHERE contact_id = {c:String} AND score >= 10",
        1,
        c=contact,
    )
    assert scored[0][0] >= 10  # the pricing page, anonymous before the identify


# -- analytics-python ------------------------------------------------------------------------------
async def test_analytics_python(stack: Stack) -> None:
    from analytics import Client  # analytics-python 1.4.post1, as sites install it

    errors: list[str] = []
    client = Client(
        WRITE_KEY,
        host=stack.url,
        gzip=True,
        on_error=lambda error, batch: errors.append(repr(error)),
        upload_interval=0.1,
        max_retries=3,
    )
    aid, user_id, email = new_aid(), f"py-{uuid.uuid4().hex[:8]}", new_email("py")
    client.page(anonymous_id=aid, name="Pricing",
                properties={"url": "https://www.acme.example/pricing"})  # fmt: skip
    client.track(anonymous_id=aid, event="Docs Read", properties={"section": "api"})
    client.identify(user_id, {"email": email, "title": "Marketing Manager"}, anonymous_id=aid)
    await asyncio.to_thread(client.flush)
    assert errors == []
    await linked_to(stack, aid)
    # later, from the backend: only the userId
    client.track(user_id, "Invoice Paid", {"amount": 49})
    client.page(user_id, name="Billing", properties={"url": "https://www.acme.example/billing"})
    await asyncio.to_thread(client.flush)
    await asyncio.to_thread(client.join)
    assert errors == []
    await check_the_person(stack, aid, user_id, email, later=2)


async def test_a_retry_of_the_sdk_after_a_503_is_one_event(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt reaches Kafka, but the answer is a 503 (as when the broker's
    acknowledgement comes too late); the SDK sends the same messageId again."""
    from analytics import Client

    collector = stack.collector
    real = collector.deliver
    failed: list[int] = []

    async def acknowledged_too_late(records: list[Record]) -> None:
        await real(records)
        if not failed:
            failed.append(len(records))
            raise BrokerUnavailable("the acknowledgement came too late")

    monkeypatch.setattr(collector, "deliver", acknowledged_too_late)
    errors: list[str] = []
    client = Client(
        WRITE_KEY,
        host=stack.url,
        max_retries=3,
        upload_interval=0.1,
        on_error=lambda error, batch: errors.append(repr(error)),
    )
    aid = new_aid()
    client.track(anonymous_id=aid, event="Retried Once")
    await asyncio.to_thread(client.flush)
    await asyncio.to_thread(client.join)
    assert failed == [1] and errors == []
    copies = await rows(
        stack,
        "SELECT event_id FROM {db}.events WHERE anonymous_id = {a:String}",
        1,
        a=aid,
    )
    async with stack.reader("events") as reader:
        await reader.wait_for(
            lambda vs: len([v for v in vs if v.get("anonymous_id") == aid]) >= 2, timeout=30
        )
    sent = [v["event_id"] for v in reader.values if v.get("anonymous_id") == aid]
    assert len(sent) == 2 and len(set(sent)) == 1  # the same event twice on ma.events
    await stack.quiescent()
    assert await stack.query(
        "SELECT count() FROM {db}.events WHERE anonymous_id = {a:String}", a=aid
    ) == [[1]]
    assert copies == [[sent[0]]]


# -- @segment/analytics-node -----------------------------------------------------------------------
def node_sdk(tmp: Path, host: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    plan = tmp / f"plan-{uuid.uuid4().hex[:6]}.json"
    plan.write_text(json.dumps({"host": host, "writeKey": WRITE_KEY, "calls": calls}))
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(SDK / "node_calls.js"), str(plan)],
        cwd=SDK,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.mark.skipif(NODE is None, reason="needs node (Node 20)")
async def test_analytics_node(stack: Stack, tmp_path: Path) -> None:
    assert (NODE_MODULES / "analytics-node").is_dir(), "run make test (npm ci in tests/sdk)"
    aid, user_id, email = new_aid(), f"node-{uuid.uuid4().hex[:8]}", new_email("node")
    await asyncio.to_thread(node_sdk, tmp_path, stack.url, [
        ("page", {"anonymousId": aid, "name": "Pricing",
                  "properties": {"url": "https://www.acme.example/pricing"}}),
        ("track", {"anonymousId": aid, "event": "Docs Read"}),
        ("identify", {"anonymousId": aid, "userId": user_id,
                      "traits": {"email": email, "title": "Marketing Manager"}}),
    ])  # fmt: skip
    await linked_to(stack, aid)
    laptop = new_aid()
    await asyncio.to_thread(node_sdk, tmp_path, stack.url, [
        ("track", {"userId": user_id, "event": "Invoice Paid", "properties": {"amount": 49}}),
        # a second device, known only by the userId: linked to the same contact
        ("track", {"userId": user_id, "anonymousId": laptop, "event": "App Opened"}),
    ])  # fmt: skip
    await check_the_person(stack, aid, user_id, email, later=2)
    assert await linked_to(stack, laptop) == [(str(contact_id_for(email)), "user_id")]


# -- @segment/analytics-next (analytics.js) in Chromium --------------------------------------------
LOAD = """
window.sent = AnalyticsNext.AnalyticsBrowser.load(
  {writeKey: %(key)s, cdnURL: location.origin,
   cdnSettings: {integrations: {"Segment.io": {apiKey: %(key)s, apiHost: %(api)s,
                                               protocol: "http"}}}},
  {retryQueue: true}
).then(async ([analytics]) => {
  await analytics.page("Pricing");
  await analytics.track("Docs Read", {section: "api"});
  await analytics.identify(%(user)s, {email: %(email)s, title: "Marketing Manager"});
  return analytics.user().anonymousId();
});
"""


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="needs Chromium at /usr/bin/chromium")
async def test_analytics_js_in_a_browser(stack: Stack) -> None:
    bundles = NODE_MODULES / "analytics-next" / "dist" / "umd"
    assert bundles.is_dir(), "run make test (npm ci in tests/sdk)"
    app = web.Application()
    page_html = (SDK / "browser.html").read_text()

    async def pricing(_: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    app.router.add_get("/pricing", pricing)
    app.router.add_static("/analytics-next/bundles/", bundles)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    user_id, email = f"ajs-{uuid.uuid4().hex[:8]}", new_email("ajs")
    try:
        async with Browser.launch() as browser:
            page = await browser.new_page()
            await page.goto(f"http://localhost:{port}/pricing")
            script = LOAD % {
                "key": json.dumps(WRITE_KEY),
                "api": json.dumps(stack.url.removeprefix("http://") + "/v1"),
                "user": json.dumps(user_id),
                "email": json.dumps(email),
            }
            await page.evaluate(script)
            aid = await asyncio.wait_for(page.evaluate("window.sent"), 30)  # awaits the calls
            await page.close()
    finally:
        await runner.cleanup()
    assert isinstance(aid, str) and aid
    contact = str(contact_id_for(email))
    assert (contact, "identify") in await linked_to(stack, aid)
    seen = await rows(
        stack,
        "SELECT type, url, name FROM {db}.contact_events WHERE anonymous_id = {a:String} "
        "ORDER BY received_at",
        3,
        a=aid,
    )
    assert [r[0] for r in seen] == ["page_view", "custom", "identify"]
    assert seen[0][1] == f"http://localhost:{port}/pricing"
    assert seen[1][2] == "Docs Read"
