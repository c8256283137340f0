"""Segment counts over a warehouse of realistic size, as ``ma-pipeline segments count`` runs them.

The tables (schema from ``schemas/clickhouse``, database ``bench_segments`` on the run's chDB
path) are filled by ClickHouse itself (``INSERT … SELECT … FROM numbers(n)``, no Python rows):

- ``contact_versions``: ``CONTACTS`` contacts with department, title, company, consent (70%),
  CRM status and a creation date over the last three years;
- ``score_state``: a score for 80% of them, its lifecycle stage from the example thresholds;
- ``events``: ``EVENTS`` events over the last 90 days, ~75% page views (1/8 of them of
  ``/pricing``), the rest custom events, forms and identifies; 60% resolved to a contact, 30%
  anonymous history of a contact's cookie (``pre_identification``), 10% never identified;
  1% automated;
- ``identities``: the first link of each contact's two cookies (so ``contact_events`` gives the
  anonymous history to its contact).

Then three segments are compiled by ``pipeline.segments.compile_segment`` and counted: attributes
only; behaviour within 30 days; attributes + behaviour + score + consent. Each figure is the
median of three counts after a warm-up. The baseline is the bare scan the behaviour conditions
cannot avoid: events of the last 30 days grouped by contact.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from clickhouse_connect.driver.client import Client

from bench import BenchContext, Measurement, Section, Timer, repeat, section
from bench.report import REPO
from pipeline.clickhouse import connect
from pipeline.clickhouse.migrate import migrate
from pipeline.rules import load_rules
from pipeline.rules.models import Segment
from pipeline.segments import compile_segment

DATABASE = "bench_segments"
DAY_MS = 86_400_000

#: contact i's id, and its cookie j (0, 1) — deterministic UUID text, as the pipeline's ids
CONTACT_ID = "toString(reinterpretAsUUID(MD5(concat('c', toString({i})))))"
COOKIE_ID = "toString(reinterpretAsUUID(MD5(concat('a', toString({i}), '-', toString({j})))))"

FILL_CONTACTS = f"""
INSERT INTO {{db}}.contact_versions
SELECT
    {CONTACT_ID.format(i="number")} AS contact_id,
    concat('p', toString(number), '@example', toString(number % 97), '.com') AS email,
    map('department', ['marketing', 'sales', 'engineering', 'finance', 'operations'][h % 5 + 1],
        'title', ['Marketing Manager', 'CTO', 'Developer', 'Head of Sales', 'Analyst',
                  'Founder', 'Product Manager', 'Account Manager'][intDiv(h, 5) % 8 + 1],
        'company', concat('Company ', toString(h % 5000))) AS attributes,
    if(intDiv(h, 40) % 10 < 7, 1, 0) AS consent_email,
    ['lead', 'lead', 'lead', 'in_deal', 'customer'][intDiv(h, 400) % 5 + 1] AS crm_status,
    '' AS crm_id,
    now64(3) - toIntervalMillisecond(intDiv(h, 2000) % (1095 * {DAY_MS})) AS created_at,
    now64(3) AS updated_at,
    0 AS deleted
FROM (SELECT number, cityHash64(number, 'contact') AS h FROM numbers({{contacts}}))
"""

FILL_SCORES = f"""
INSERT INTO {{db}}.score_state (contact_id, score, lifecycle_stage, at)
SELECT
    {CONTACT_ID.format(i="number")} AS contact_id,
    toFloat64(h % 160) AS score,
    multiIf(score >= 100, 'sql', score >= 50, 'mql', 'lead') AS lifecycle_stage,
    now64(3) - toIntervalMillisecond(intDiv(h, 1000) % (60 * {DAY_MS})) AS at
FROM (SELECT number, cityHash64(number, 'score') AS h FROM numbers({{contacts}}))
WHERE h % 10 < 8
"""

FILL_IDENTITIES = f"""
INSERT INTO {{db}}.identities
SELECT
    {COOKIE_ID.format(i="intDiv(number, 2)", j="number % 2")} AS anonymous_id,
    {CONTACT_ID.format(i="intDiv(number, 2)")} AS contact_id,
    '' AS previous_contact_id,
    'identify' AS reason,
    '' AS event_id,
    now64(3) - toIntervalMillisecond(cityHash64(number, 'link') % (90 * {DAY_MS})) AS at
FROM numbers({{contacts}} * 2)
"""

PAGES = "['/', '/pricing', '/pricing/enterprise', '/blog/lead-scoring', '/blog/marketing/attribution', '/docs/getting-started', '/demo', '/careers']"  # noqa: E501

# Columns named: a column added since (user_id, identity_refused) takes its default.
FILL_EVENTS = f"""
INSERT INTO {{db}}.events (event_id, type, site_id, received_at, client_ts, source, anonymous_id,
    contact_id, pre_identification, url, path, referrer, title, name, form_id, campaign_id,
    properties, automated, automated_reason, user_agent)
SELECT
    toString(reinterpretAsUUID(MD5(concat('e', toString(number))))) AS event_id,
    multiIf(r < 75, 'page_view', r < 88, 'custom', r < 94, 'form_submit', 'identify') AS type,
    'acme' AS site_id,
    now64(3) - toIntervalMillisecond(intDiv(h, 100) % (90 * {DAY_MS})) AS received_at,
    received_at - toIntervalMillisecond(h % 900) AS client_ts,
    'browser' AS source,
    {COOKIE_ID.format(i="c", j="intDiv(h, 7) % 2")} AS anonymous_id,
    if(who < 6, {CONTACT_ID.format(i="c")}, '') AS contact_id,
    if(who >= 6 AND who < 9, 1, 0) AS pre_identification,
    concat('https://www.acme.example', path) AS url,
    {PAGES}[intDiv(h, 13) % 8 + 1] AS path,
    ['', 'https://www.google.com/', 'https://www.linkedin.com/'][intDiv(h, 17) % 3 + 1] AS referrer,
    'A page | Acme' AS title,
    if(type = 'custom', ['video_played', 'pricing_toggle', 'trial_signup'][h % 3 + 1], '') AS name,
    if(type = 'form_submit', 'demo-request', '') AS form_id,
    '' AS campaign_id,
    '' AS properties,
    if(intDiv(h, 19) % 100 = 0, 1, 0) AS automated,
    '' AS automated_reason,
    'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0' AS user_agent
FROM (
    SELECT number, h, h % 100 AS r, intDiv(h, 23) % 10 AS who,
           -- never-identified cookies belong to contact numbers beyond the contacts table
           intDiv(h, 29) % {{contacts}} + if(who = 9, {{contacts}}, 0) AS c
    FROM (SELECT number, cityHash64(number, 'event') AS h FROM numbers({{events}}))
)
"""

#: The three segments: attributes only; behaviour only; everything at once.
SEGMENTS: dict[str, dict[str, Any]] = {
    "attributes": {
        "name": "bench-attributes",
        "where": {
            "attributes": [
                {"field": "department", "equals": "marketing"},
                {"field": "title", "contains": "manager"},
            ]
        },
    },
    "behaviour": {
        "name": "bench-behaviour",
        "where": {
            "behaviour": [
                {"match": {"type": "page_view", "url": "/pricing*"}, "at_least": 2, "within": "30d"}
            ]
        },
    },
    "combined": {
        "name": "bench-combined",
        "where": {
            "attributes": [
                {"field": "department", "equals": "marketing"},
                {"field": "title", "contains": "manager"},
            ],
            "behaviour": [
                {"match": {"type": "page_view", "url": "/pricing*"}, "at_least": 2, "within": "30d"}
            ],
            "score": {"min": 20},
            "consent_email": True,
            "created_within": "365d",
        },
    },
}

#: The bare work behind a behaviour condition: a month of events grouped by contact.
SCAN = (
    "SELECT count() FROM (SELECT contact_id FROM {db}.events "
    "WHERE received_at >= now64(3) - INTERVAL 30 DAY GROUP BY contact_id)"
)


def _fill(client: Client, *, contacts: int, events: int) -> dict[str, int]:
    for sql in (FILL_CONTACTS, FILL_SCORES, FILL_IDENTITIES, FILL_EVENTS):
        client.command(
            sql.replace("{db}", DATABASE)
            .replace("{contacts}", str(contacts))
            .replace("{events}", str(events))
        )
    return {
        table: int(client.query(f"SELECT count() FROM {DATABASE}.{table}").result_rows[0][0])
        for table in ("contact_versions", "score_state", "identities", "events")
    }


def _wait_for_merges(client: Client, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.query(
            "SELECT count() FROM system.merges WHERE database = {db:String}",
            parameters={"db": DATABASE},
        ).result_rows[0][0]
        if not running:
            return
        time.sleep(0.5)


def _count(client: Client, *, sql: str, parameters: dict[str, Any]) -> int:
    return int(client.query(sql, parameters=parameters).result_rows[0][0])


@section("segments")
async def segments(ctx: BenchContext, out: Section) -> None:
    """Segment counts (compiled by pipeline.segments) over 10M events and 1M contacts in chDB."""
    contacts = ctx.scale(1_000_000, 20_000)
    events = ctx.scale(10_000_000, 200_000)
    rules = load_rules(REPO / "config" / "rules.yaml")
    clickhouse = connect(ctx.settings.model_copy(update={"clickhouse_database": DATABASE}))
    try:
        await clickhouse.run(partial(migrate, database=DATABASE))
        ctx.log(f"filling {DATABASE}: {events:,} events over {contacts:,} contacts …")
        with Timer() as fill:
            counts = await clickhouse.run(partial(_fill, contacts=contacts, events=events))
        ctx.log(
            f"filled in {fill.seconds:.1f} s: "
            + ", ".join(f"{table} {n:,}" for table, n in counts.items())
        )
        # A warehouse is queried between merges, not while a bulk insert's parts are merged:
        # wait for the background merges the fill started (they took the CPUs otherwise).
        with Timer() as settle:
            await clickhouse.run(_wait_for_merges)
        ctx.log(f"background merges done after {settle.seconds:.1f} s")
        tables = (
            f"{counts['events']:,} events, {counts['contact_versions']:,} contacts, "
            f"{counts['score_state']:,} scores"
        )

        async def timed(sql: str, parameters: dict[str, Any]) -> tuple[Measurement, int]:
            result = 0

            async def once(run: int) -> float:
                nonlocal result
                with Timer() as t:
                    result = await clickhouse.run(partial(_count, sql=sql, parameters=parameters))
                return t.seconds

            return await repeat(once), result

        scan, groups = await timed(SCAN.replace("{db}", DATABASE), {})
        out.add(
            "segments.scan_30d",
            scan,
            "s",
            note=f"bare scan: 30 days of events grouped by contact_id ({groups:,} groups); "
            f"{tables}; filled in {fill.seconds:.0f} s",
        )
        for label, spec in SEGMENTS.items():
            segment = Segment.model_validate(spec)
            compiled = compile_segment(segment, DATABASE, half_life=rules.scoring.half_life)
            seconds, members = await timed(compiled.count_sql(), compiled.parameters)
            out.add(
                f"segments.{label}",
                seconds,
                "s",
                baseline="segments.scan_30d",
                note=f"{members:,} contacts; {_describe(segment)}; goal < 1 s",
                extra={"contacts": members, "sql": compiled.sql},
            )
            ctx.log(f"{label}: {members:,} contacts in {seconds.median:.3f} s")
    finally:
        clickhouse.close()


def _describe(segment: Segment) -> str:
    where = segment.where
    assert where is not None
    parts = [
        f"{a.field} {'=' if a.equals is not None else '~'} {a.equals or a.contains}"
        for a in where.attributes
    ]
    parts += [
        f"{b.at_least}+ {','.join(b.match.type or [])} {','.join(b.match.url or [])} "
        f"in {b.within.days}d"
        for b in where.behaviour
    ]
    if where.score is not None and where.score.min is not None:
        parts.append(f"score >= {where.score.min:g}")
    if where.consent_email:
        parts.append("consent")
    if where.created_within is not None:
        parts.append(f"created within {where.created_within.days}d")
    return ", ".join(parts)
