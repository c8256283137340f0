"""The console (CONTRACT §8) on a real collector, broker, worker and chDB, after
``ma-pipeline demo``'s traffic and one scripted person: every page renders, its figures equal
what ``ma-pipeline query``'s SQL gives, the contact page tells a person's story (anonymous
history, a score change with its rule, a trigger suppressed with its reason), nothing answers
without the token, and headless Chromium draws every page (screenshots in
``test-artifacts/console/``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import codec, contact_id_for
from pipeline.console import data
from pipeline.console.views import esc
from pipeline.demo import run_demo
from pipeline.rules import load_rules
from pipeline.segments import compile_segment
from tests.browser import Browser, chromium_available
from tests.conftest import REPO
from tests.integration.worker.conftest import (
    CRM_KEY,
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
    page_view,
)

pytestmark = pytest.mark.integration

TOKEN = "ct_console_token_for_tests_0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = REPO / "test-artifacts" / "console"
PAGES = ["health", "activation", "funnel", "triggers", "segments", "contact"]


@pytest.fixture(scope="module")
async def console(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, str]]:
    """A stack with demo traffic and Ana: anonymous pricing views, then known as a customer."""
    tmp = tmp_path_factory.mktemp("console")
    async with open_stack(kafka_bootstrap, tmp, console_token=TOKEN) as stack:
        await run_demo(stack.settings, load_rules(stack.settings.config), visitors=30, seed=7)
        email, aid = new_email("ana"), new_aid()
        await stack.send(page_view(aid, "/pricing"), page_view(aid, "/pricing/enterprise"))
        # a placeholder email first: kept, not taken as evidence (CONTRACT §3)
        await stack.send({"type": "identify", "anonymous_id": aid, "email": "test@test.com"})
        await stack.contacts(
            "crm", {"email": email, "consent_email": True, "crm_status": "customer"}
        )
        contact = str(contact_id_for(email))
        await eventually(
            lambda: stack.query(
                "SELECT 1 FROM {db}.contacts WHERE contact_id = {c:String}", c=contact
            )
        )
        await stack.send({"type": "identify", "anonymous_id": aid, "email": email})
        await eventually(
            lambda: stack.query(
                "SELECT 1 FROM {db}.trigger_decisions WHERE contact_id = {c:String}", c=contact
            ),
            timeout=60,
        )
        await stack.quiescent()
        yield stack, email


def base(stack: Stack) -> str:
    return stack.settings.worker_api


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(url, headers=headers or {}, allow_redirects=False) as response,
    ):
        return response.status, await response.text(), response.headers


def metric(page: str, name: str) -> str:
    found = re.search(rf'data-metric="{re.escape(name)}"[^>]*>([^<]*)<', page)
    assert found, f"no figure {name!r} on the page"
    return found.group(1).replace(",", "")


@pytest.mark.parametrize(
    "path",
    ["/console", "/console/health", "/console/contact?email=a@b.io", "/console/feed/stages",
     "/console/export/sales-ready.csv", "/console/static/console.js"],
)  # fmt: skip
async def test_nothing_answers_without_the_token(console: tuple[Stack, str], path: str) -> None:
    stack, _ = console
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Cookie": "ma_console=forged"}):
        status, text, answer = await get(base(stack) + path, headers)
        assert status == 401, (path, headers, status)
        assert answer["WWW-Authenticate"].startswith("Bearer")
        assert "<html" not in text
    status, _, _ = await get(base(stack) + path + ("&" if "?" in path else "?") + "token=wrong")
    assert status == 401


async def test_a_key_without_the_console_scope_gets_403_and_a_dead_letter(
    console: tuple[Stack, str],
) -> None:
    """CONTRACT §1: the example rules' crm-sync key holds contacts:write only."""
    stack, _ = console
    status, text, _ = await get(
        f"{base(stack)}/console/health", {"Authorization": f"Bearer {CRM_KEY}"}
    )
    assert status == 403 and "scope console required: key 'crm-sync'" in text, (status, text)
    assert "<html" not in text

    async def dead_lettered() -> bool:
        async with stack.reader("dead-letter") as reader:
            await reader.settle(0.5)
        return any(v.get("source") == "worker:/console/health" and "scope console" in v["error"]
                   for v in reader.values)  # fmt: skip

    await eventually(dead_lettered, timeout=20)


async def test_a_browser_logs_in_once_with_the_token_in_the_url(console: tuple[Stack, str]) -> None:
    stack, _ = console
    status, _, answer = await get(f"{base(stack)}/console/funnel?token={TOKEN}")
    assert status == 303
    assert answer["Location"] == "/console/funnel"  # the token leaves the address bar
    cookie = answer["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    session = cookie.split(";", 1)[0]
    status, text, _ = await get(f"{base(stack)}/console/funnel", {"Cookie": session})
    assert status == 200 and "<h1>Funnel</h1>" in text


@pytest.mark.parametrize("page", PAGES)
async def test_every_page_renders_with_a_bearer_token(
    console: tuple[Stack, str], page: str
) -> None:
    stack, _ = console
    status, text, answer = await get(f"{base(stack)}/console/{page}", BEARER)
    assert status == 200, text
    assert answer["Content-Type"].startswith("text/html")
    assert f'data-page="{page}"' in text and 'class="error"' not in text
    assert "/console/static/chart.umd.min.js" in text  # served here, no CDN
    assert (
        "http://" not in text.split("<main", 1)[0] and "https://" not in text.split("<main", 1)[0]
    )


async def test_the_figures_equal_what_query_gives(console: tuple[Stack, str]) -> None:
    stack, _ = console
    db = stack.settings.clickhouse_database

    async def scalar(template: str) -> str:
        [[value]] = await stack.query(data.sql(template, db))
        return str(value)

    _, activation, _ = await get(f"{base(stack)}/console/activation", BEARER)
    assert metric(activation, "cookies_seen") == await scalar(data.COOKIES_SEEN)
    assert metric(activation, "cookies_identified") == await scalar(data.COOKIES_IDENTIFIED)
    _, funnel, _ = await get(f"{base(stack)}/console/funnel", BEARER)
    assert metric(funnel, "contacts") == await scalar(data.CONTACTS_TOTAL)
    stages = dict(await stack.query(data.sql(data.STAGES, db)))
    for stage in ("lead", "mql", "sql"):
        assert metric(funnel, f"stage_{stage}") == str(stages.get(stage, 0))
    _, health, _ = await get(f"{base(stack)}/console/health", BEARER)
    assert metric(health, "events") == await scalar(data.EVENTS_TOTAL)
    # the lag and dead-letter charts draw what the health page's tables say
    _, lag, _ = await get(f"{base(stack)}/console/feed/lag", BEARER)
    _, letters, _ = await get(f"{base(stack)}/console/feed/dead-letters", BEARER)
    lag, letters = codec.loads(lag), codec.loads(letters)
    assert (lag["type"], letters["type"]) == ("bar", "bar")
    assert all(" · " in label for label in lag["labels"])
    for label, count in zip(letters["labels"], letters["datasets"][0]["data"], strict=True):
        assert f"{esc(label)}</td><td class=num>{count}</td>" in health
    _, triggers, _ = await get(f"{base(stack)}/console/triggers", BEARER)
    [[fired]] = await stack.query(f"SELECT count() FROM {db}.triggers")
    [[skipped]] = await stack.query(
        f"SELECT count() FROM {db}.trigger_decisions WHERE decision = 'skipped'"
    )
    assert (metric(triggers, "fired"), metric(triggers, "skipped")) == (str(fired), str(skipped))
    _, segments, _ = await get(f"{base(stack)}/console/segments", BEARER)
    rules = stack.collector.rules.rules
    for segment in rules.segments:
        compiled = compile_segment(segment, db, half_life=rules.scoring.half_life)
        [[size]] = await stack.query(compiled.count_sql(), **compiled.parameters)
        assert metric(segments, f"segment:{segment.name}") == str(size)


async def test_the_contact_page_tells_the_story_with_reasons(console: tuple[Stack, str]) -> None:
    stack, email = console
    status, page, _ = await get(f"{base(stack)}/console/contact?email={email}", BEARER)
    assert status == 200
    assert '<span class="tag anon">anonymous history</span>' in page  # an event of it, marked
    assert "by rule <code>pricing-view</code> for event <code" in page  # rule and event
    assert "(decayed) →" in page  # the decayed value before the change, then after
    assert 'data-decision="suppressed:customer"' in page
    assert "suppressed: CRM status customer (suppress_if)" in page
    assert "linked</span> cookie by identify" in page
    assert "refused as evidence: invalid email: placeholder address" in page
    assert email in page


async def test_the_segment_export_is_the_cli_export(console: tuple[Stack, str]) -> None:
    stack, _ = console
    status, text, answer = await get(f"{base(stack)}/console/export/sales-ready.csv", BEARER)
    assert status == 200 and answer["Content-Type"].startswith("text/csv")
    assert text.splitlines()[0].startswith("contact_id,email,attributes")


@pytest.mark.skipif(not chromium_available(), reason="needs Chromium (make test installs it)")
async def test_chromium_draws_every_page_and_its_charts(console: tuple[Stack, str]) -> None:
    stack, email = console
    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.goto(f"{base(stack)}/console?token={TOKEN}")
        assert await page.wait_for("location.pathname === '/console/health'")
        cookies = await page.cookies()
        assert cookies["ma_console"]["httpOnly"] is True
        for name in PAGES:
            query = f"?email={email}" if name == "contact" else ""
            await page.goto(f"{base(stack)}/console/{name}{query}")
            assert await page.evaluate("document.querySelector('main').dataset.page") == name
            await page.wait_for(
                "[...document.querySelectorAll('canvas[data-feed]')]"
                ".every(c => c.dataset.loaded === '1')",
                timeout=15,
            )
            assert await page.evaluate("typeof Chart") == "function"
            if name == "health":  # live: the figures and charts refresh without a reload
                stamp = "document.getElementById('refreshed').textContent"
                await page.wait_for(f"{stamp}.startsWith('updated')", timeout=15)
                await page.evaluate(
                    "window.sameDocument = 1; window.stamp = "
                    "document.getElementById('refreshed').textContent"
                )
                await page.wait_for(
                    "document.getElementById('refreshed').textContent !== window.stamp",
                    timeout=15,
                )
                assert await page.evaluate("window.sameDocument") == 1
            await page.screenshot(ARTIFACTS / f"{name}.png")
            assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
        await page.close()


def test_artifacts_are_not_committed() -> None:
    assert "test-artifacts/" in Path(REPO / ".gitignore").read_text()
