"""``ma-pipeline demo``: realistic synthetic traffic through the running collector, then a
summary of what the pipeline made of it (identities, scores, triggers, segments).

Visitors browse anonymously (blog, product and pricing pages, careers), some come back, some
fill a form or are identified, some click a signed link in a campaign mail (from their phone
or their laptop), a CRM sync brings attributes and consent. Everything goes through the public
HTTP API, exactly as sites, mail senders and CRMs would send it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp

from pipeline import contact_id_for, links
from pipeline.rules import Rules
from pipeline.settings import Settings
from pipeline.warehouse import QueryError, run_query

PAGES = [
    ("/", 10),
    ("/blog/marketing/attribution-101", 6),
    ("/blog/marketing/lead-scoring", 5),
    ("/blog/growth/data-driven-marketing", 4),
    ("/products/widget", 5),
    ("/products/gadget", 3),
    ("/pricing", 4),
    ("/pricing/enterprise", 2),
    ("/careers", 1),
    ("/about", 2),
]
#: The secret of the ``crm-sync`` key of ``config/rules.yaml`` (scopes contacts:write and
#: segments:read): an example, known to everyone; a deployment lists keys of its own.
EXAMPLE_CRM_KEY = "mak_example_crm_sync_change_me"
TITLES = ["Marketing Manager", "CTO", "Developer", "Head of Growth", "Sales Director", "Analyst"]
DEPARTMENTS = ["marketing", "engineering", "sales", "finance"]
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15"
)


@dataclass
class Summary:
    visitors: int = 0
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    clicks: int = 0
    contacts_synced: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


def _weighted(rng: random.Random) -> str:
    paths = [path for path, _ in PAGES]
    weights = [weight for _, weight in PAGES]
    return rng.choices(paths, weights)[0]


async def run_demo(
    settings: Settings,
    rules: Rules,
    visitors: int = 200,
    seed: int = 1,
    crm_key: str = EXAMPLE_CRM_KEY,
) -> Summary:
    """Send the traffic and gather the summary."""
    rng = random.Random(seed)
    site = rules.sites[0] if rules.sites else None
    if site is None:
        raise ValueError(f"{settings.config}: the demo needs a site in the rules file")
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    base = f"http://{host}:{settings.http_port}"
    summary = Summary(visitors=visitors)
    people = [
        f"{name}.{i}@demo-{rng.choice(['acme', 'globex', 'initech'])}.io"
        for i, name in enumerate(
            rng.choice(["ana", "bo", "cara", "dan", "eve", "fei", "gus"])
            for _ in range(max(visitors // 2, 1))
        )
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        crm = [
            {
                "email": email,
                "attributes": {"title": rng.choice(TITLES), "department": rng.choice(DEPARTMENTS)},
                "consent_email": rng.random() < 0.8,
                "crm_status": rng.choice(["lead", "lead", "lead", "in_deal", "customer"]),
            }
            for email in people[: len(people) // 2]
        ]
        for start in range(0, len(crm), 500):
            status = await _post(
                http,
                f"{base}/v1/contacts",
                {"source": "crm", "contacts": crm[start : start + 500]},
                {"Authorization": f"Bearer {crm_key}"},
                summary,
            )
            if status in (401, 403):
                raise ValueError(
                    f"the collector refused the CRM sync ({status}): give the demo a key with "
                    "the contacts:write scope (--crm-key or MA_DEMO_CRM_KEY)"
                )
        summary.contacts_synced = len(crm)
        sem = asyncio.Semaphore(16)

        async def visitor(index: int) -> None:
            async with sem:
                await _visit(
                    http,
                    base,
                    settings,
                    site.id,
                    site.write_key,
                    rng.random(),
                    rng.choice(people),
                    random.Random(seed * 1000 + index),
                    summary,
                )

        await asyncio.gather(*(visitor(i) for i in range(visitors)))
    await asyncio.sleep(3)  # let the worker and the sink catch up
    summary.figures = await _figures(settings)
    return summary


async def _visit(
    http: aiohttp.ClientSession,
    base: str,
    settings: Settings,
    site_id: str,
    write_key: str,
    kind: float,
    email: str,
    rng: random.Random,
    summary: Summary,
) -> None:
    aid = str(uuid.uuid4())
    events: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 8)):
        events.append(
            {
                "type": "page_view",
                "anonymous_id": aid,
                "event_id": str(uuid.uuid4()),
                "url": f"https://www.acme.example{_weighted(rng)}",
                "title": "Acme",
            }
        )
    if kind < 0.15:
        events.append(
            {
                "type": "form_submit",
                "anonymous_id": aid,
                "email": email,
                "form_id": rng.choice(["demo-request", "whitepaper", "newsletter"]),
                "traits": {
                    "company": email.split("@")[1].split(".")[0].title(),
                    "consent_email": True,
                },
            }
        )
    elif kind < 0.25:
        events.append({"type": "identify", "anonymous_id": aid, "email": email})
    elif kind < 0.3:
        events.append({"type": "custom", "anonymous_id": aid, "name": "trial_signup"})
    elif kind < 0.32:
        events.append({"type": "identify", "anonymous_id": aid, "email": "test@test.com"})
    await _post(
        http,
        f"{base}/v1/batch",
        {"site_id": site_id, "write_key": write_key, "events": events},
        {},
        summary,
    )
    if 0.3 <= kind < 0.45:  # a campaign mail click, signed a while before
        token = links.sign(
            contact_id=str(contact_id_for(email)),
            url="https://www.acme.example/pricing",
            campaign_id="demo-spring",
            site_id=site_id,
            link_id="cta",
            keys=settings.link_keys,
            now=settings.clock().now() - timedelta(hours=2),
        )
        async with http.get(
            f"{base}/c/{token}",
            allow_redirects=False,
            headers={"Cookie": f"ma_aid={aid}", "User-Agent": BROWSER},
        ) as response:
            summary.requests += 1
            summary.clicks += response.status == 302


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str], summary: Summary
) -> int:
    async with http.post(url, json=body, headers={"User-Agent": BROWSER, **headers}) as response:
        summary.requests += 1
        if response.status == 200:
            answer = await response.json()
            summary.accepted += int(answer.get("accepted", 0))
            summary.rejected += len(answer.get("rejected", []))
        else:
            summary.rejected += 1
        return response.status


async def _figures(settings: Settings) -> dict[str, Any]:
    db = settings.clickhouse_database
    queries = {
        "events": f"SELECT count() FROM {db}.events",
        "automated events": f"SELECT countIf(automated = 1) FROM {db}.events",
        "identified cookies": (
            f"SELECT uniqExact(anonymous_id) FROM {db}.identities WHERE contact_id != ''"
        ),
        "cookies seen": (
            f"SELECT uniqExact(anonymous_id) FROM {db}.events WHERE anonymous_id != ''"
        ),
        "contacts": f"SELECT count() FROM {db}.contacts",
        "contacts by stage": (
            f"SELECT lifecycle_stage, count() FROM {db}.scores GROUP BY 1 ORDER BY 1"
        ),
        "triggers by rule": (
            f"SELECT rule, channel, count() FROM {db}.triggers GROUP BY 1, 2 ORDER BY 1"
        ),
    }
    figures: dict[str, Any] = {}
    for name, sql in queries.items():
        try:
            _, rows = await run_query(settings, sql)
        except QueryError as exc:
            figures[name] = f"unavailable ({exc})"
            continue
        figures[name] = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else rows
    seen, identified = figures.get("cookies seen"), figures.get("identified cookies")
    if isinstance(seen, int) and isinstance(identified, int) and seen:
        figures["activation rate"] = f"{identified / seen:.0%} of cookies identified"
    return figures
