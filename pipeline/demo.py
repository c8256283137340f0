"""``ma-pipeline demo``: a small company's day through the running collector, then what the
pipeline made of *this run* (not table totals), and where to look next.

The story, the same for the same ``--seed`` (every id, email and choice comes from it):

1. **CRM import**: half the people are already in the CRM (title, department, consent, some
   in a deal or customers already), synced with the ``crm-sync`` key.
2. **A campaign**: a mail with a signed link to the pricing page goes to the CRM contacts who
   consented. Some click it on their phone (a cookie of its own), and a few of those later
   come back on their laptop and fill in a form: one person, two cookies.
3. **Visitors**, mostly anonymous: blog posts, products, pricing, careers; some identify or
   fill a form, some start a trial.
4. **What marketing data is also made of**: a mail security scanner that clicks every link the
   moment the mail is delivered (flagged, links nobody), a trade-show kiosk where five people
   fill in the same form one after another (re-linked too often: flagged), a mail forwarded to
   a colleague (the click counts for the recipient, the colleague's cookie stays theirs), a
   placeholder email (refused as evidence).

Everything goes through the public HTTP API, exactly as sites, mail senders and CRMs send it.
Then the demo waits until the sink has stored this run's events and reads its figures back
with the same queries as ``ma-pipeline query``, restricted to this run's cookies and contacts.
Running the same seed twice sends the same events again: the pipeline deduplicates them.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp

from pipeline import contact_id_for, links
from pipeline.rules import Rules
from pipeline.segments import compile_segment
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
CAMPAIGN = "demo-spring-launch"
NAMES = ["ana", "bo", "cara", "dan", "eve", "fei", "gus", "hana", "ivo", "jo", "kai", "lea"]
COMPANIES = ["globex", "initech", "umbrella", "hooli", "stark", "wayne"]
TITLES = ["Marketing Manager", "CTO", "Developer", "Head of Growth", "Sales Director", "Analyst"]
DEPARTMENTS = ["marketing", "engineering", "sales", "finance"]
LAPTOP = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15"
)
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
KIOSK_VISITORS = 5

#: ``progress(step, done, total)``: what the demo is doing, for a progress bar
Progress = Callable[[str, int, int], None]


@dataclass
class Summary:
    """What the demo sent (counted from the collector's answers) and, in ``figures``, what the
    pipeline made of it (read back from ClickHouse)."""

    visitors: int = 0
    requests: int = 0
    events: int = 0  # events the collector accepted (not counting CRM contacts)
    rejected: Counter[str] = field(default_factory=Counter)  # dead letters by reason
    clicks: int = 0
    cookieless_clicks: int = 0  # the scanner's: no cookie, so not among this run's cookies
    contacts_synced: int = 0
    cookies: list[str] = field(default_factory=list)  # this run's cookies
    contacts: list[str] = field(default_factory=list)  # this run's people's contact ids
    #: people worth a look in the console: what happened to them → email
    featured: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    caught_up: bool = False  # every accepted event was stored before the figures were read


@dataclass
class _Person:
    email: str
    in_crm: bool
    consent: bool
    status: str


class _Sender:
    """Posts to the collector and counts what it answered."""

    def __init__(self, http: aiohttp.ClientSession, base: str, summary: Summary) -> None:
        self.http, self.base, self.summary = http, base, summary

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> int:
        summary = self.summary
        async with self.http.post(
            f"{self.base}{path}", json=body, headers={"User-Agent": LAPTOP, **(headers or {})}
        ) as response:
            summary.requests += 1
            answer = await response.json(content_type=None)
            if response.status == 200:
                if path == "/v1/batch":
                    summary.events += int(answer.get("accepted", 0))
                for refusal in answer.get("rejected", []):
                    summary.rejected[_reason(refusal.get("error", ""))] += 1
            else:
                summary.rejected[_reason(str(answer.get("error", response.status)))] += 1
            return response.status

    async def click(self, token: str, aid: str | None, user_agent: str) -> None:
        headers = {"User-Agent": user_agent}
        if aid is not None:
            headers["Cookie"] = f"ma_aid={aid}"
        async with self.http.get(
            f"{self.base}/c/{token}", allow_redirects=False, headers=headers
        ) as response:
            self.summary.requests += 1
            self.summary.clicks += response.status == 302
            self.summary.cookieless_clicks += response.status == 302 and aid is None


def _reason(error: str) -> str:
    """A dead letter's reason without what makes each one different (which event of a
    batch, the value): ``events[3].email: not an email address`` → ``email: not an …``."""
    if error.startswith("events[") and "]" in error:
        error = error.split("]", 1)[1].lstrip(".")
    return error.split(";")[0].split(" (")[0][:80]


async def run_demo(
    settings: Settings,
    rules: Rules,
    visitors: int = 200,
    seed: int = 1,
    crm_key: str = EXAMPLE_CRM_KEY,
    progress: Progress | None = None,
    wait: float = 60.0,
) -> Summary:
    """Send the story's traffic, wait (up to ``wait`` seconds) until it is stored, gather the
    figures of this run."""
    rng = random.Random(seed)
    site = rules.sites[0] if rules.sites else None
    if site is None:
        raise ValueError(f"{settings.config}: the demo needs a site in the rules file")
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    base = f"http://{host}:{settings.http_port}"
    tell = progress or (lambda step, done, total: None)
    summary = Summary(visitors=visitors)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def cookie() -> str:
        aid = new_id()
        summary.cookies.append(aid)
        return aid

    people = [
        _Person(
            f"{rng.choice(NAMES)}.{i}.s{seed}@{rng.choice(COMPANIES)}-demo.io",
            in_crm=i % 2 == 0,
            consent=rng.random() < 0.8,
            status=rng.choice(["lead", "lead", "lead", "in_deal", "customer"]),
        )
        for i in range(max(visitors // 2, 2))
    ]
    summary.contacts = [str(contact_id_for(p.email)) for p in people]

    def page(aid: str, path: str | None = None) -> dict[str, Any]:
        return {
            "type": "page_view",
            "anonymous_id": aid,
            "event_id": new_id(),
            "url": f"https://www.acme.example{path or _weighted(rng)}",
            "title": "Acme",
        }

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        send = _Sender(http, base, summary)

        async def batch(events: list[dict[str, Any]]) -> None:
            await send.post(
                "/v1/batch", {"site_id": site.id, "write_key": site.write_key, "events": events}
            )

        # 1. the CRM import
        crm = [
            {
                "email": p.email,
                "attributes": {"title": rng.choice(TITLES), "department": rng.choice(DEPARTMENTS)},
                "consent_email": p.consent,
                "crm_status": p.status,
            }
            for p in people
            if p.in_crm
        ]
        for start in range(0, len(crm), 500):
            tell("CRM import", start, len(crm))
            status = await send.post(
                "/v1/contacts",
                {"source": "crm", "contacts": crm[start : start + 500]},
                {"Authorization": f"Bearer {crm_key}"},
            )
            if status in (401, 403):
                raise ValueError(
                    f"the collector refused the CRM sync ({status}): give the demo a key with "
                    "the contacts:write scope (--crm-key or MA_DEMO_CRM_KEY)"
                )
        summary.contacts_synced = len(crm)
        tell("CRM import", len(crm), len(crm))

        # 2. the campaign: signed links, sent two hours ago
        def token(person: _Person, sent_ago: timedelta) -> str:
            return links.sign(
                contact_id=str(contact_id_for(person.email)),
                url="https://www.acme.example/pricing",
                campaign_id=CAMPAIGN,
                site_id=site.id,
                link_id="pricing-cta",
                keys=settings.link_keys,
                now=settings.clock().now() - sent_ago,
            )

        recipients = [p for p in people if p.in_crm and p.consent]
        last = len(recipients) - 1  # clicks, whatever the dice say: every run has a click
        clickers = [p for i, p in enumerate(recipients) if i == last or rng.random() < 0.4]
        for n, person in enumerate(clickers):
            tell("campaign clicks", n, len(clickers))
            phone = cookie()
            await send.click(token(person, timedelta(hours=2)), phone, PHONE)
            await batch([page(phone, "/pricing") for _ in range(rng.randint(1, 3))])
            if n % 3 == 0:  # later, on the laptop: another cookie, a form, the same person
                laptop = cookie()
                await batch(
                    [
                        page(laptop, "/products/widget"),
                        {
                            "type": "form_submit",
                            "anonymous_id": laptop,
                            "event_id": new_id(),
                            "email": person.email,
                            "form_id": "demo-request",
                            "traits": {"consent_email": True},
                        },
                    ]
                )
                summary.featured.setdefault(
                    "clicked on a phone, then a form on a laptop", person.email
                )
        tell("campaign clicks", len(clickers), len(clickers))

        # 3. visitors, mostly anonymous
        sem = asyncio.Semaphore(16)
        done = 0

        def visit(aid: str, kind: float, person: _Person, views: int) -> list[dict[str, Any]]:
            events = [page(aid) for _ in range(views)]
            if kind < 0.12:
                events.append(
                    {
                        "type": "form_submit",
                        "anonymous_id": aid,
                        "event_id": new_id(),
                        "email": person.email,
                        "form_id": rng.choice(["demo-request", "whitepaper", "newsletter"]),
                        "traits": {"company": person.email.split("@")[1].split(".")[0].title()},
                    }
                )
            elif kind < 0.2:
                events.append(
                    {"type": "identify", "anonymous_id": aid, "event_id": new_id(),
                     "email": person.email}
                )  # fmt: skip
            elif kind < 0.25:
                events.append(
                    {"type": "custom", "anonymous_id": aid, "event_id": new_id(),
                     "name": "trial_signup"}
                )  # fmt: skip
            return events

        visits = [
            visit(cookie(), rng.random(), rng.choice(people), rng.randint(1, 8))
            for _ in range(visitors)
        ]

        async def visitor(events: list[dict[str, Any]]) -> None:
            nonlocal done
            async with sem:
                await batch(events)
            done += 1
            if done % 10 == 0:
                tell("visitors", done, visitors)

        await asyncio.gather(*(visitor(events) for events in visits))
        tell("visitors", visitors, visitors)

        # 4. scanners, a kiosk, a forwarded mail, a placeholder email
        tell("scanners, a kiosk, a forwarded mail", 0, 4)
        for person in recipients[:2]:  # the gateway fetches the link as the mail arrives
            await send.click(token(person, timedelta(seconds=1)), None, LAPTOP)
        kiosk = cookie()
        for i in range(KIOSK_VISITORS):  # one after another: re-linked each time
            person = people[i % len(people)]
            await batch(
                [
                    page(kiosk, "/products/gadget"),
                    {
                        "type": "form_submit",
                        "anonymous_id": kiosk,
                        "event_id": new_id(),
                        "email": person.email,
                        "form_id": "trade-show",
                    },
                ]
            )
        if len(recipients) >= 2:
            sender, colleague = recipients[0], recipients[1]
            desk = cookie()
            await batch(
                [
                    {
                        "type": "identify",
                        "anonymous_id": desk,
                        "event_id": new_id(),
                        "email": colleague.email,
                    }
                ]
            )
            await send.click(token(sender, timedelta(hours=3)), desk, LAPTOP)
            summary.featured.setdefault("forwarded the campaign mail", sender.email)
        placeholder = cookie()
        await batch(
            [{"type": "identify", "anonymous_id": placeholder, "event_id": new_id(),
              "email": "test@test.com"}]
        )  # fmt: skip
        tell("scanners, a kiosk, a forwarded mail", 4, 4)

    for label, crm_status in (
        ("in a deal: offers suppressed", "in_deal"),
        ("a customer", "customer"),
    ):
        match = next((p for p in people if p.in_crm and p.status == crm_status), None)
        if match is not None:
            summary.featured.setdefault(label, match.email)

    summary.caught_up = await _until_stored(settings, summary, wait, tell)
    summary.figures = await figures_of(settings, rules, summary)
    return summary


def _weighted(rng: random.Random) -> str:
    paths = [path for path, _ in PAGES]
    weights = [weight for _, weight in PAGES]
    return rng.choices(paths, weights)[0]


async def _until_stored(settings: Settings, summary: Summary, wait: float, tell: Progress) -> bool:
    """Wait until ClickHouse holds every event this run sent (its cookies' events and clicks),
    then a sink batch longer for what the worker derived from them."""
    db = settings.clickhouse_database
    sql = (
        f"SELECT uniqExact(event_id) FROM {db}.events WHERE anonymous_id IN {{aids:Array(String)}}"
    )
    expected = summary.events + summary.clicks - summary.cookieless_clicks
    deadline = time.monotonic() + wait
    stored = 0
    while time.monotonic() < deadline:
        tell("waiting for the pipeline", min(stored, expected), expected)
        try:
            _, rows = await run_query(settings, sql, {"aids": summary.cookies})
            stored = int(rows[0][0])
        except QueryError:
            stored = 0
        if stored >= expected:
            tell("waiting for the pipeline", expected, expected)
            await asyncio.sleep(2.0)  # the triggers and decisions of its last events
            return True
        await asyncio.sleep(0.5)
    return False


async def figures_of(settings: Settings, rules: Rules, summary: Summary) -> dict[str, Any]:
    """This run's figures, each from ClickHouse over this run's cookies and contacts (names →
    a number, a text or rows); a figure that cannot be read says why."""
    db = settings.clickhouse_database
    aids = "{aids:Array(String)}"
    cids = "{cids:Array(String)}"
    mine = f"(contact_id IN {cids} OR anonymous_id IN {aids})"
    queries = {
        "cookies seen": (
            f"SELECT uniqExact(anonymous_id) FROM {db}.events WHERE anonymous_id IN {aids}"
        ),
        "cookies identified": (
            f"SELECT uniqExact(anonymous_id) FROM {db}.identities "
            f"WHERE anonymous_id IN {aids} AND contact_id != ''"
        ),
        "identified by": (
            f"SELECT reason, uniqExact(anonymous_id) FROM {db}.identities "
            f"WHERE anonymous_id IN {aids} AND contact_id != '' GROUP BY reason ORDER BY 2 DESC"
        ),
        "refused as evidence": (
            f"SELECT * FROM (SELECT automated_reason, count() AS n FROM {db}.events "
            "WHERE type = 'email_click' AND automated = 1 AND campaign_id = {campaign:String} "
            f"GROUP BY 1 UNION ALL SELECT reason, uniqExact(anonymous_id) AS n "
            f"FROM {db}.identities WHERE anonymous_id IN {aids} AND contact_id = '' "
            "GROUP BY 1) ORDER BY n DESC"
        ),
        "contacts by stage": (
            f"SELECT lifecycle_stage, count() FROM {db}.scores WHERE contact_id IN {cids} "
            "GROUP BY 1 ORDER BY 1"
        ),
        "triggers fired": (
            f"SELECT rule, channel, count() FROM {db}.triggers WHERE {mine} GROUP BY 1, 2 "
            "ORDER BY 3 DESC, 1"
        ),
        "triggers scheduled": (
            f"SELECT rule, count() FROM {db}.trigger_decisions WHERE {mine} "
            "AND decision = 'scheduled' GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        "triggers skipped": (
            f"SELECT rule, reason, count() FROM {db}.trigger_decisions WHERE {mine} "
            "AND decision = 'skipped' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        ),
    }
    parameters = {"aids": summary.cookies, "cids": summary.contacts, "campaign": CAMPAIGN}
    figures: dict[str, Any] = {}
    for name, sql in queries.items():
        try:
            _, rows = await run_query(settings, sql, parameters)
        except QueryError as exc:
            figures[name] = f"unavailable ({exc})"
            continue
        figures[name] = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else rows
    seen, identified = figures.get("cookies seen"), figures.get("cookies identified")
    if isinstance(seen, int) and isinstance(identified, int) and seen:
        figures["activation rate"] = f"{identified / seen:.0%} of this run's cookies identified"
    segments = []
    for segment in rules.segments:
        compiled = compile_segment(segment, db, half_life=rules.scoring.half_life)
        sql = f"SELECT count() FROM ({compiled.sql}) WHERE contact_id IN {cids}"
        try:
            _, rows = await run_query(
                settings, sql, {**compiled.parameters, "cids": summary.contacts}
            )
        except QueryError:
            continue
        segments.append([segment.name, int(rows[0][0])])
    figures["segments"] = sorted(segments, key=lambda row: (-row[1], row[0]))
    return figures
