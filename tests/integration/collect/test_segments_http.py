"""``GET /v1/segments…`` through the real collector and a real worker, with contacts and events
sent through the pipeline, compared with answers worked out by hand and with the CLI's.

The people (``config/rules.yaml``'s segments; CRM contacts unless said otherwise):

======  =====================================  =======  =========  ==============  ==============
who     attributes                             consent  created    pricing views   score
======  =====================================  =======  =========  ==============  ==============
ana     Marketing Manager, marketing           yes      10 d ago   2               35
bo      Marketing Manager, marketing           yes      10 d ago   1               25
cy      Marketing Manager, marketing           no       10 d ago   2               35
di      Marketing Manager, marketing           yes      800 d ago  2               35
ed      (form only: demo request, trial)       –        now        0               70 (mql)
fay     –                                      no       3 y ago    0               0
======  =====================================  =======  =========  ==============  ==============

So ``marketing-managers-engaged`` = {ana} (bo: one view; cy: no consent; di: created too long
ago), ``sales-ready`` = {ed}, ``stale-leads`` = {di, fay}.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline import codec, contact_id_for
from pipeline.collect.app import Collector
from pipeline.rules import RulesWatcher, parse_rules
from pipeline.settings import Settings
from tests.conftest import REPO
from tests.integration.collect.conftest import CRM_KEY, RULES_TEXT, SERVER_KEY, RunningCollector
from tests.integration.worker.conftest import (
    Stack,
    eventually,
    new_aid,
    new_email,
    open_stack,
    page_view,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {CRM_KEY}"}
EXPORT_COLUMNS = ["contact_id", "email", "attributes", "consent_email", "crm_status",
                  "created_at", "score", "lifecycle_stage"]  # fmt: skip
EMAIL = {name: new_email(name) for name in ("ana", "bo", "cy", "di", "ed", "fay")}
ID = {name: str(contact_id_for(email)) for name, email in EMAIL.items()}
EXPECTED = {
    "marketing-managers-engaged": {ID["ana"]},
    "sales-ready": {ID["ed"]},
    "stale-leads": {ID["di"], ID["fay"]},
}


def ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


async def seed(stack: Stack) -> None:
    """Everyone of the table above, sent through the collector; waits until ClickHouse has it."""
    manager = {"title": "Marketing Manager", "department": "marketing"}

    def crm(name: str, consent: bool, days: int, attributes: dict[str, str]) -> dict[str, Any]:
        return {"email": EMAIL[name], "attributes": attributes, "consent_email": consent,
                "created_at": ago(days)}  # fmt: skip

    await stack.contacts(
        "crm",
        crm("ana", True, 10, manager),
        crm("bo", True, 10, manager),
        crm("cy", False, 10, manager),
        crm("di", True, 800, manager),
        crm("fay", False, 3 * 365, {}),
    )
    views = {"ana": 2, "bo": 1, "cy": 2, "di": 2}
    for name, count in views.items():
        aid = new_aid()
        await stack.send(
            {"type": "form_submit", "anonymous_id": aid, "email": EMAIL[name],
             "form_id": "newsletter"},
            *(page_view(aid, "/pricing") for _ in range(count)),
        )  # fmt: skip
    aid = new_aid()
    await stack.send(
        {"type": "form_submit", "anonymous_id": aid, "email": EMAIL["ed"],
         "form_id": "demo-request"},
        {"type": "custom", "anonymous_id": aid, "name": "trial_signup"},
    )  # fmt: skip

    async def landed() -> bool:
        [[contacts]] = await stack.query("SELECT count() FROM {db}.contacts")
        [[linked_views]] = await stack.query(
            "SELECT count() FROM {db}.contact_events WHERE type = 'page_view'")  # fmt: skip
        [[ed]] = await stack.query(
            "SELECT count() FROM {db}.scores WHERE contact_id = {c:String} AND score >= 70",
            c=ID["ed"],
        )
        return bool(contacts == 6 and linked_views == sum(views.values()) and ed == 1)

    await eventually(landed, timeout=90, every=0.5)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``ma-pipeline <args>`` with the stack's settings (it reaches ClickHouse via the worker)."""
    env = {**os.environ, **settings.as_env(), "MA_KAFKA_BOOTSTRAP": settings.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with open_stack(kafka_bootstrap, tmp_path_factory.mktemp("segments")) as running:
        await seed(running)
        yield running


async def get(stack: Stack, path: str, **kw: Any) -> aiohttp.ClientResponse:
    response = await stack.http.get(f"{stack.url}{path}", **{"headers": AUTH, **kw})
    await response.read()
    return response


# -- with a worker ------------------------------------------------------------------------------
async def test_list_names_every_segment_of_the_rules_with_its_description(stack: Stack) -> None:
    response = await get(stack, "/v1/segments")
    assert response.status == 200
    assert response.headers["Cache-Control"].startswith("no-store")
    body = codec.loads(await response.read())
    by_name = {s["name"]: s for s in body["segments"]}
    assert set(by_name) == set(EXPECTED)
    assert by_name["sales-ready"] == {
        "name": "sales-ready",
        "kind": "rules",
        "description": "MQLs and SQLs with a score of at least 50",
    }
    assert by_name["stale-leads"]["kind"] == "sql"


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_count_matches_the_hand_computed_members_and_the_cli(stack: Stack, name: str) -> None:
    response = await get(stack, f"/v1/segments/{name}/count")
    assert response.status == 200, await response.text()
    assert codec.loads(await response.read()) == {"segment": name, "count": len(EXPECTED[name])}
    result = await asyncio.to_thread(cli, stack.settings, "segments", "count", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(EXPECTED[name]))


async def test_csv_export_has_the_cli_columns_and_the_members(stack: Stack) -> None:
    response = await get(stack, "/v1/segments/stale-leads/export?format=csv")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="stale-leads.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0] == EXPORT_COLUMNS
    members = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert {m["contact_id"] for m in members} == EXPECTED["stale-leads"]
    assert {m["email"] for m in members} == {EMAIL["di"], EMAIL["fay"]}
    di = next(m for m in members if m["contact_id"] == ID["di"])
    assert codec.loads(di["attributes"]) == {
        "title": "Marketing Manager",
        "department": "marketing",
    }
    assert di["consent_email"] == "1"

    cli_result = await asyncio.to_thread(cli, stack.settings, "segments", "export", "stale-leads",
                                         "--format", "csv")  # fmt: skip
    assert cli_result.returncode == 0, cli_result.stderr
    cli_rows = list(csv.reader(io.StringIO(cli_result.stdout)))
    assert cli_rows[0] == rows[0]
    # Same rows, apart from the score, which decays between the two queries.
    score = EXPORT_COLUMNS.index("score")
    assert [r[:score] + r[score + 1:] for r in cli_rows[1:]] == \
           [r[:score] + r[score + 1:] for r in rows[1:]]  # fmt: skip


async def test_json_export_is_one_object_per_member_with_score_and_stage(stack: Stack) -> None:
    response = await get(stack, "/v1/segments/sales-ready/export", params={"format": "json"})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    [member] = [codec.loads(line) for line in (await response.text()).splitlines()]
    assert list(member) == EXPORT_COLUMNS
    assert member["contact_id"] == ID["ed"] and member["email"] == EMAIL["ed"]
    assert member["score"] == pytest.approx(70, abs=0.1)
    assert member["lifecycle_stage"] == "mql"


async def test_export_of_an_empty_segment_is_the_header_alone(stack: Stack) -> None:
    nobody = RULES_TEXT.replace("score: {min: 50}", "score: {min: 10000}")
    watcher = stack.collector.rules
    in_force = watcher.rules
    watcher.rules = parse_rules(nobody)
    try:
        response = await get(stack, "/v1/segments/sales-ready/export")
        assert response.status == 200
        assert list(csv.reader(io.StringIO(await response.text()))) == [EXPORT_COLUMNS]
        response = await get(stack, "/v1/segments/sales-ready/count")
        assert codec.loads(await response.read()) == {"segment": "sales-ready", "count": 0}
    finally:
        watcher.rules = in_force
    rules_file = stack.tmp / "nobody.yaml"
    rules_file.write_text(nobody)
    settings = stack.settings.model_copy(update={"config": rules_file})
    result = await asyncio.to_thread(cli, settings, "segments", "export", "sales-ready")
    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [EXPORT_COLUMNS]


# -- refusals (no worker needed) ------------------------------------------------------------
REQUIRED = "Authorization: Bearer <server key> is required"
INVALID = "Authorization: not a valid server key"
ROUTES = ["/v1/segments", "/v1/segments/sales-ready/count", "/v1/segments/sales-ready/export"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, REQUIRED),
        ({"Authorization": "Bearer sk_wrong"}, INVALID),
        ({"Authorization": f"Basic {SERVER_KEY}"}, REQUIRED),
        ({"Authorization": "Bearer wk_acme_public_7d1f3a"}, INVALID),
    ],
    ids=["none", "wrong-key", "not-bearer", "write-key"],
)
async def test_without_a_valid_server_key_is_401_with_a_json_error(
    collector: RunningCollector, path: str, headers: dict[str, str], message: str
) -> None:
    response = await collector.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert codec.loads(await response.read()) == {"error": message}


@pytest.mark.parametrize("path", ROUTES)
async def test_a_site_server_key_gets_403_naming_the_scope_and_a_dead_letter(
    collector: RunningCollector, path: str
) -> None:
    """A site's server key means ingest:<site> only: no segment list, count or export."""
    response = await collector.get(path, headers={"Authorization": f"Bearer {SERVER_KEY}"})

    assert response.status == 403
    error = "scope segments:read required: key 'server_key:acme' does not have it"
    assert codec.loads(await response.read()) == {"error": error}
    letters = await collector.values("dead-letter")
    assert [(d["source"], d["error"]) for d in letters] == [(f"collector:{path}", error)]


@pytest.mark.parametrize("path", ["/v1/segments/no-such/count", "/v1/segments/no-such/export"])
async def test_unknown_segment_is_404_naming_the_known_ones(
    collector: RunningCollector, path: str
) -> None:
    response = await collector.get(path, headers=AUTH)
    assert response.status == 404
    error = codec.loads(await response.read())["error"]
    assert "'no-such'" in error and "sales-ready" in error


async def test_unknown_export_format_is_400(collector: RunningCollector) -> None:
    response = await collector.get("/v1/segments/sales-ready/export?format=xml", headers=AUTH)
    assert response.status == 400
    assert "csv, json" in codec.loads(await response.read())["error"]


@pytest.fixture
async def without_worker(topics: Settings, tmp_path: Path) -> AsyncIterator[RunningCollector]:
    """A collector whose embedded ClickHouse has no worker (nothing on the worker API port)."""
    settings = topics.model_copy(update={"clickhouse_url": f"chdb://{tmp_path / 'ch'}"})
    state = Collector(settings, RulesWatcher(settings.config))
    runner = web.AppRunner(state.make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield RunningCollector(f"http://127.0.0.1:{settings.http_port}", state, settings, http)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ROUTES[1:])
async def test_without_a_worker_is_503_and_never_opens_embedded_clickhouse(
    without_worker: RunningCollector, tmp_path: Path, path: str
) -> None:
    response = await without_worker.get(path, headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"]
    error = codec.loads(await response.read())["error"]
    assert "is the worker running?" in error and without_worker.settings.worker_api in error
    # the collector did not take the engine's files from the worker that should own them
    assert not (tmp_path / "ch").exists()
