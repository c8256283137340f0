# ruff: noqa: E501  (HTML templates: a line of markup reads better whole than split)
"""The console's pages, chart feeds and export (CONTRACT §8), served by the worker API.

Server-rendered HTML; ``static/console.js`` draws each ``<canvas data-feed>`` with Chart.js
(served from ``static/``, no CDN) and refreshes charts and live figures every few seconds.
Every figure comes from ``pipeline.console.data`` (its SQL is shown under the figure).

Routes (all behind ``ConsoleGuard``)::

    GET /console                       → /console/health
    GET /console/{page}                health, activation, funnel, triggers, segments, contact
    GET /console/feed/{name}           a chart's data or a page's live figures (JSON)
    GET /console/export/{segment}.csv  a segment's members, as ``segments export``
    GET /console/static/{file}         chart.umd.min.js, console.js, console.css
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from pipeline import codec
from pipeline.collect.segments import csv_chunk
from pipeline.console import data
from pipeline.console.auth import ConsoleGuard
from pipeline.console.data import ConsoleDataUnavailable, Reader, sql
from pipeline.identity import contact_id_for, normalize_email
from pipeline.segments import EXPORT_COLUMNS, compile_segment
from pipeline.warehouse import QueryError
from pipeline.worker.pending import pending_view
from pipeline.worker.profiles import Worker

STATIC = Path(__file__).parent / "static"
PAGES = ("health", "activation", "funnel", "triggers", "segments", "contact")
TITLES = {
    "health": "Health",
    "activation": "Activation",
    "funnel": "Funnel",
    "triggers": "Triggers",
    "segments": "Segments",
    "contact": "Contact",
}
NO_STORE = {"Cache-Control": "no-store"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def esc(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return html.escape(value.strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, float):
        return html.escape(f"{value:,.1f}" if value != int(value) else f"{int(value):,}")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return html.escape(codec.dumps(value).decode())
    return html.escape(str(value))


def number(value: Any) -> str:
    return esc(value if value is not None else 0)


class Console:
    """One console per worker API: the guard, where its data comes from, its pages."""

    def __init__(self, worker: Worker, reader: Reader) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.db = worker.settings.clickhouse_database
        self.read = reader
        self.guard = ConsoleGuard(
            worker.settings,
            worker.rules,
            on_forbidden=lambda path, message: worker.refused(f"worker:{path}", message),
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console", self.index)
        app.router.add_get("/console/", self.index)
        app.router.add_get("/console/static/{file}", self.static)
        app.router.add_get("/console/feed/{name}", self.feed)
        app.router.add_get("/console/export/{segment}.csv", self.export)
        app.router.add_get("/console/{page}", self.page)

    # -- handlers -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.guard.refuse(request)) is not None:
            return refused
        raise web.HTTPFound("/console/health")

    async def static(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.guard.refuse(request)) is not None:
            return refused
        name = request.match_info["file"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    async def page(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.guard.refuse(request)) is not None:
            return refused
        name = request.match_info["page"]
        if name not in PAGES:
            raise web.HTTPNotFound(text=f"no console page {name!r}; pages: {', '.join(PAGES)}")
        render: Callable[[web.Request], Awaitable[str]] = getattr(self, f"_{name}")
        try:
            body = await render(request)
        except (ConsoleDataUnavailable, QueryError) as exc:
            body = f'<div class="error">ClickHouse did not answer: {esc(exc)}</div>'
        return web.Response(
            text=self._layout(name, body),
            content_type="text/html",
            headers={**NO_STORE, "Content-Security-Policy": CSP},
        )

    async def feed(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.guard.refuse(request)) is not None:
            return refused
        name = request.match_info["name"]
        make = FEEDS.get(name)
        if make is None:
            raise web.HTTPNotFound(text=f"no feed {name!r}")
        try:
            value = await make(self)
        except (ConsoleDataUnavailable, QueryError) as exc:
            return web.json_response({"error": str(exc)}, status=503, headers=NO_STORE)
        return web.Response(
            body=codec.dumps(value), content_type="application/json", headers=NO_STORE
        )

    async def export(self, request: web.Request) -> web.StreamResponse:
        """A segment's members as CSV: the columns and SQL of ``ma-pipeline segments export``."""
        if (refused := self.guard.refuse(request)) is not None:
            return refused
        name = request.match_info["segment"]
        rules = self.worker.rules.rules
        segment = rules.segment(name)
        if segment is None:
            raise web.HTTPNotFound(text=f"no segment {name!r} in the rules")
        compiled = compile_segment(segment, self.db, half_life=rules.scoring.half_life)
        columns, rows = await self.read(compiled.export_sql(self.db), compiled.parameters)
        return web.Response(
            body=csv_chunk([columns or list(EXPORT_COLUMNS)]) + csv_chunk(rows),
            content_type="text/csv",
            charset="utf-8",
            headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    # -- helpers ------------------------------------------------------------------------------
    async def scalar(self, template: str, **parameters: Any) -> Any:
        _, rows = await self.read(sql(template, self.db), parameters)
        return rows[0][0] if rows else 0

    async def rows(self, template: str, **parameters: Any) -> list[list[Any]]:
        _, rows = await self.read(sql(template, self.db), parameters)
        return rows

    def _layout(self, current: str, body: str) -> str:
        nav = "".join(
            f'<a href="/console/{p}"{" class=on" if p == current else ""}>{TITLES[p]}</a>'
            for p in PAGES
        )
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLES[current]} · ma-pipeline console</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/chart.umd.min.js"></script>
<script src="/console/static/console.js"></script>
</head><body>
<header><div class="brand">ma-pipeline <span>console</span></div><nav>{nav}</nav>
<div class="live" id="refreshed">live</div></header>
<main data-page="{current}">{body}</main>
</body></html>"""

    def _card(self, label: str, value: Any, metric: str, note: str = "", live: str = "") -> str:
        live_attr = f' data-live="{live}"' if live else ""
        return (
            f'<div class="card"><div class="label">{esc(label)}</div>'
            f'<div class="value" data-metric="{metric}"{live_attr}>{number(value)}</div>'
            f'<div class="note">{note}</div></div>'
        )

    def _sql(self, *templates: str) -> str:
        text = "\n\n".join(esc(sql(t, self.db)) for t in templates)
        return f'<details class="sql"><summary>SQL</summary><pre>{text}</pre></details>'

    @staticmethod
    def _chart(feed: str, title: str, sql_html: str = "") -> str:
        return (
            f'<div class="card"><h2>{esc(title)}</h2><div class="chart">'
            f'<canvas data-feed="{feed}" aria-label="{esc(title)}"></canvas></div>{sql_html}</div>'
        )

    @staticmethod
    def _table(columns: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
        numeric = numeric or set()
        if not rows:
            return '<p class="empty">nothing yet</p>'
        head = "".join(
            f"<th{' class=num' if i in numeric else ''}>{esc(c)}</th>"
            for i, c in enumerate(columns)
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{' class=num' if i in numeric else ''}>{cell if isinstance(cell, Raw) else esc(cell)}</td>"
                for i, cell in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    # -- pages --------------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> str:
        figures = await health_figures(self)
        lag_rows = figures["lag by topic"]
        letters = figures["dead letters by reason"]
        cards = "".join(
            [
                self._card(
                    "events stored", figures["events"], "events", "in ClickHouse", "health:events"
                ),
                self._card(
                    "last hour",
                    figures["events_last_hour"],
                    "events_last_hour",
                    "events received",
                    "health:events_last_hour",
                ),
                self._card(
                    "accepted",
                    figures["accepted"],
                    "accepted",
                    "by the collector since it started",
                    "health:accepted",
                ),
                self._card(
                    "rejected",
                    figures["rejected"],
                    "rejected",
                    "dead-lettered by the collector",
                    "health:rejected",
                ),
                self._card(
                    "503 answers",
                    figures["unavailable"],
                    "unavailable",
                    "broker did not acknowledge",
                    "health:unavailable",
                ),
                self._card(
                    "consumer lag", figures["lag"], "lag", "records not yet processed", "health:lag"
                ),
                self._card(
                    "sink retries",
                    figures["sink_retries"],
                    "sink_retries",
                    "ClickHouse writes retried",
                    "health:sink_retries",
                ),
                self._card(
                    "delivery retries",
                    figures["delivery_retries"],
                    "delivery_retries",
                    "webhook attempts retrying",
                    "health:delivery_retries",
                ),
            ]
        )
        collector = (
            ""
            if figures["collector_reachable"]
            else (
                f'<div class="error">The collector\'s metrics ({esc(self.settings.collector_metrics)}) '
                "did not answer: accepted, rejected and 503 figures are missing.</div>"
            )
        )
        return f"""<h1>Health</h1><p class="lead">Is the pipeline taking events in, processing
them and writing them out? Live: refreshed every 5 s.</p>{collector}
<div class="grid">{cards}</div>
<div class="cols">{self._chart("events-per-minute", "Events per second by type (each minute of the last hour)", self._sql(data.EVENTS_PER_MINUTE))}
{self._chart("dead-letters", "Dead letters by reason")}</div>
<div class="cols">{self._chart("lag", "Consumer lag per group and topic")}
<div class="card"><h2>Dead letters and lag, exactly</h2>{self._table(["source · reason", "count"], [[k, v] for k, v in sorted(letters.items(), key=lambda kv: -kv[1])], {1})}{self._table(["group", "topic", "lag"], lag_rows, {2})}</div></div>"""

    async def _activation(self, request: web.Request) -> str:
        seen = await self.scalar(data.COOKIES_SEEN)
        identified = await self.scalar(data.COOKIES_IDENTIFIED)
        rate = f"{100 * identified / seen:.1f}%" if seen else "–"
        paths = await self.rows(data.IDENTIFIED_BY_PATH)
        cards = (
            self._card("cookies seen", seen, "cookies_seen", "distinct ma_aid values")
            + self._card("identified", identified, "cookies_identified", "linked to a contact")
            + f'<div class="card"><div class="label">activation rate</div><div class="value" data-metric="activation_rate">{rate}</div><div class="note">identified / seen</div></div>'
        )
        return f"""<h1>Activation</h1><p class="lead">How many anonymous visitors became known
contacts, and how: an email click, a form, an identify call, a user id.</p>
<div class="grid">{cards}</div>
<div class="cols">{self._chart("identified-by-path", "Identified by path", self._sql(data.IDENTIFIED_BY_PATH))}
{self._chart("activation-by-day", "Cookies seen and identified per day", self._sql(data.ACTIVATION_BY_DAY))}</div>
<div class="card"><h2>Identified by path</h2>{self._table(["path", "cookies"], paths, {1})}{self._sql(data.COOKIES_SEEN, data.COOKIES_IDENTIFIED)}</div>"""

    async def _funnel(self, request: web.Request) -> str:
        stages = await self.rows(data.STAGES)
        contacts = await self.scalar(data.CONTACTS_TOTAL)
        by_stage = {str(stage): n for stage, n in stages}
        cards = self._card("contacts", contacts, "contacts") + "".join(
            self._card(stage, by_stage.get(stage, 0), f"stage_{stage}")
            for stage in ("lead", "mql", "sql")
        )
        return f"""<h1>Funnel</h1><p class="lead">Where contacts stand: lifecycle stages from the
score thresholds of the rules file, and how scores spread.</p>
<div class="grid">{cards}</div>
<div class="cols">{self._chart("stages", "Contacts by lifecycle stage", self._sql(data.STAGES))}
{self._chart("score-histogram", "Score histogram (buckets of 10 points)", self._sql(data.SCORE_HISTOGRAM))}</div>"""

    async def _triggers(self, request: web.Request) -> str:
        fired = await self.rows(data.FIRED_BY_RULE)
        skipped = await self.rows(data.SKIPPED_BY_REASON)
        deliveries = await self.rows(data.DELIVERIES_BY_DESTINATION)
        pending = pending_view(self.worker)
        by_rule: dict[str, int] = {}
        for p in pending:
            by_rule[str(p["rule"])] = by_rule.get(str(p["rule"]), 0) + 1
        cards = (
            self._card("fired", sum(int(r[2]) for r in fired), "fired")
            + self._card(
                "skipped",
                sum(int(r[2]) for r in skipped),
                "skipped",
                "suppressed, capped, cancelled …",
            )
            + self._card("pending", len(pending), "pending", "delayed, held by this worker")
        )
        pending_rows = [
            [
                p["due_at"],
                p["rule"],
                p["channel"],
                p["subject"],
                ", ".join(p["cancelled_by"]) or "–",
            ]
            for p in pending[:50]
        ]
        return f"""<h1>Triggers</h1><p class="lead">What fired, what did not and why, what waits,
and what reached the webhooks.</p>
<div class="grid">{cards}</div>
<div class="cols">{self._chart("fired-by-rule", "Fired by rule", self._sql(data.FIRED_BY_RULE))}
{self._chart("skipped-by-reason", "Skipped by rule and reason", self._sql(data.SKIPPED_BY_REASON))}</div>
<div class="cols"><div class="card"><h2>Skipped by rule and reason</h2>{self._table(["rule", "reason", "skipped"], skipped, {2})}</div>
<div class="card"><h2>Deliveries</h2>{self._table(["destination", "status", "attempts"], deliveries, {2})}{self._sql(data.DELIVERIES_BY_DESTINATION)}</div></div>
<div class="card"><h2>Pending delayed triggers</h2>{self._table(["due at", "rule", "channel", "subject", "cancelled by"], pending_rows)}</div>"""

    async def _segments(self, request: web.Request) -> str:
        rules = self.worker.rules.rules
        wanted = request.query.get("name")
        listed = []
        for segment in rules.segments:
            compiled = compile_segment(segment, self.db, half_life=rules.scoring.half_life)
            _, rows = await self.read(compiled.count_sql(), compiled.parameters)
            size = rows[0][0] if rows else 0
            link = Raw(
                f'<a href="/console/segments?name={quote(segment.name)}">{esc(segment.name)}</a>'
            )
            export = Raw(f'<a href="/console/export/{quote(segment.name)}.csv">CSV</a>')
            listed.append(
                [
                    link,
                    segment.description or "",
                    Raw(f'<span data-metric="segment:{esc(segment.name)}">{number(size)}</span>'),
                    export,
                ]
            )
        members = ""
        chosen = rules.segment(wanted) if wanted else None
        if chosen is not None:
            compiled = compile_segment(chosen, self.db, half_life=rules.scoring.half_life)
            columns, rows = await self.read(compiled.export_sql(self.db), compiled.parameters)
            index = {c: i for i, c in enumerate(columns)}
            shown = [
                [
                    Raw(
                        f'<a href="/console/contact?contact_id={quote(str(r[index["contact_id"]]))}">{esc(r[index["email"]] or r[index["contact_id"]])}</a>'
                    ),
                    r[index["score"]] if "score" in index else "",
                    r[index["lifecycle_stage"]] if "lifecycle_stage" in index else "",
                    r[index["crm_status"]] if "crm_status" in index else "",
                ]
                for r in rows[:200]
            ]
            members = f'<div class="card"><h2>Members of {esc(chosen.name)} (first 200 of {len(rows):,})</h2>{self._table(["contact", "score", "stage", "crm status"], shown, {1})}</div>'
        return f"""<h1>Segments</h1><p class="lead">The rules file's segments, their size now, their
members, and a CSV export (the same as <code>ma-pipeline segments export</code>).</p>
<div class="card spaced">{self._table(["segment", "description", "size", "export"], listed, {2})}</div>{members}"""

    async def _contact(self, request: web.Request) -> str:
        email = (request.query.get("email") or "").strip()
        contact_id = (request.query.get("contact_id") or "").strip()
        if email:
            contact_id = str(contact_id_for(normalize_email(email)))
        form = f"""<form class="find" method="get" action="/console/contact">
<input name="email" type="email" placeholder="email, e.g. ana@acme.io" value="{esc(email)}" required>
<button type="submit">Find</button></form>"""
        intro = """<h1>Contact</h1><p class="lead">One person's story: every event (the anonymous
history before they were known included), each identity decision, each score change with its
rule, each trigger fired or suppressed with the reason, and their consent.</p>"""
        if not contact_id:
            return intro + form
        return intro + form + await self._contact_story(contact_id, email)

    async def _contact_story(self, contact_id: str, email: str) -> str:
        found = await self.rows(data.CONTACT, c=contact_id)
        cookies = [str(r[0]) for r in await self.rows(data.CONTACT_COOKIES, c=contact_id)]
        timeline = await self.rows(data.CONTACT_TIMELINE, c=contact_id)
        if not found and not timeline and not cookies:
            return f'<p class="empty">No contact {esc(email or contact_id)} in ClickHouse.</p>'
        score_row = await self.rows(data.CONTACT_SCORE, c=contact_id)
        identity = await self.rows(data.CONTACT_IDENTITY, c=contact_id)
        scores = await self.rows(data.CONTACT_SCORES, c=contact_id, a=cookies)
        fired = await self.rows(data.CONTACT_TRIGGERS, c=contact_id, a=cookies)
        decisions = await self.rows(data.CONTACT_DECISIONS, c=contact_id, a=cookies)
        contact: list[Any] = found[0] if found else [contact_id, email, {}, 0, "", "", None, None]
        score, stage = (score_row[0][0], score_row[0][1]) if score_row else (0.0, "lead")
        consent = Raw(
            '<span class="tag good">yes</span>' if contact[3] else '<span class="tag bad">no</span>'
        )
        pending = pending_view(self.worker, contact[1] or email) if (contact[1] or email) else []
        story: list[tuple[Any, str, Raw, str]] = []
        for (
            at,
            kind,
            path,
            name,
            form_id,
            campaign,
            aid,
            anonymous,
            automated,
            why,
            refused,
            _eid,
        ) in timeline:
            what = " ".join(
                str(x)
                for x in (
                    path,
                    name,
                    form_id and f"form {form_id}",
                    campaign and f"campaign {campaign}",
                )
                if x
            )
            tags = '<span class="tag anon">anonymous history</span> ' if anonymous else ""
            if automated:
                tags += f'<span class="tag warn">automated: {esc(why)}</span> '
            if refused:  # a form or identify not taken as evidence (garbage email, kiosk)
                tags += f'<span class="tag bad">refused as evidence: {esc(refused)}</span> '
            story.append((at, "event", Raw(f"{tags}<b>{esc(kind)}</b> {esc(what)}"), str(aid)))
        for at, aid, to, previous, reason, _eid in identity:
            if to == contact_id and not previous:
                verdict = f'<span class="tag good">linked</span> cookie by {esc(reason)}'
            elif to == contact_id:
                verdict = (
                    f'<span class="tag warn">re-linked</span> from another contact by {esc(reason)}'
                )
            elif not to:
                verdict = f'<span class="tag bad">unlinked</span> {esc(reason)}'
            else:
                verdict = f'<span class="tag bad">moved</span> to another contact ({esc(reason)})'
            story.append((at, "identity", Raw(verdict), str(aid)))
        for at, rule, delta, total, lifecycle, eid, aid in scores:
            sign = "+" if delta >= 0 else ""
            # the score after the change is the decayed value before it plus the points
            before = float(total) - float(delta)
            cause = f' for event <code title="{esc(eid)}">{esc(str(eid)[:8])}</code>' if eid else ""
            story.append(
                (
                    at,
                    "score",
                    Raw(
                        f"<b>{sign}{esc(float(delta))}</b> by rule <code>{esc(rule)}</code>{cause}: {esc(round(before, 3))} (decayed) → {esc(float(total))} ({esc(lifecycle)})"
                    ),
                    str(aid or ""),
                )
            )
        for at, rule, channel, trigger_id, _due, causes in fired:
            story.append(
                (
                    at,
                    "trigger",
                    Raw(
                        f'<span class="tag good">fired</span> <code>{esc(rule)}</code> on {esc(channel)} <span class="mono">{esc(trigger_id)}</span>'
                        + (f" caused by {len(causes)} event(s)" if causes else "")
                    ),
                    "",
                )
            )
        for at, rule, decision, reason, _eid, aid in decisions:
            if decision == "scheduled":  # a delayed trigger: when it is due
                due = reason.removeprefix("due_at:")
                verdict = f'<span class="tag warn" data-decision="scheduled">scheduled</span> <code>{esc(rule)}</code>: due {esc(due)}'
            else:
                verdict = f'<span class="tag bad" data-decision="{esc(reason)}">{esc(decision)}</span> <code>{esc(rule)}</code>: {esc(_reason_words(reason))}'
            story.append(
                (
                    at,
                    "trigger",
                    Raw(verdict),
                    str(aid or ""),
                )
            )
        story.sort(key=lambda item: (item[0] is None, item[0]))
        rows = [
            [at, kind, what, Raw(f'<span class="mono">{esc(aid)}</span>')]
            for at, kind, what, aid in story
        ]
        attributes = contact[2] or {}
        pending_rows = [
            [p["due_at"], p["rule"], p["channel"], ", ".join(p["cancelled_by"]) or "–"]
            for p in pending
        ]
        cards = (
            self._card("score", float(score), "score", f"lifecycle stage {esc(stage)}")
            + self._card(
                "events",
                len(timeline),
                "events",
                f"{sum(1 for r in timeline if r[7])} from anonymous history",
            )
            + self._card("cookies", len(cookies), "cookies", "browsers linked")
            + f'<div class="card"><div class="label">email consent</div><div class="value">{consent}</div><div class="note">CRM status {esc(contact[4]) or "–"}</div></div>'
        )
        details = self._table(
            ["field", "value"],
            [
                ["email", contact[1]],
                ["contact_id", contact_id],
                ["crm_id", contact[5]],
                ["created", contact[6]],
                *[[k, v] for k, v in sorted(attributes.items())],
            ],
        )
        return f"""<div class="grid">{cards}</div>
<div class="cols"><div class="card"><h2>Who</h2>{details}</div>
<div class="card"><h2>Pending delayed triggers</h2>{self._table(["due at", "rule", "channel", "cancelled by"], pending_rows)}</div></div>
<div class="card"><h2>Timeline</h2>{self._table(["at", "what", "detail", "cookie"], rows)}
{self._sql(data.CONTACT_TIMELINE, data.CONTACT_IDENTITY, data.CONTACT_SCORES, data.CONTACT_TRIGGERS, data.CONTACT_DECISIONS)}</div>"""


class Raw(str):
    """HTML already escaped, to be put in a table cell as it is."""


REASONS = {
    "once_per": "already fired within the rule's once_per",
    "cancel_if": "cancelled by a cancel_if event",
    "no_consent": "suppressed: no email consent",
    "unsubscribed": "suppressed: unsubscribed",
    "hard_bounce": "suppressed: the address bounced",
    "frequency_cap": "suppressed: the channel's frequency cap",
    "history_too_old": "the anonymous history was older than history_within",
    "rule_removed": "the rule was removed before it was due",
    "not_identified": "needs an identified contact",
    "identified": "for anonymous visitors only",
}


def _reason_words(reason: str) -> str:
    if reason.startswith("suppressed:"):
        return f"suppressed: CRM status {reason.split(':', 1)[1]} (suppress_if)"
    return REASONS.get(reason, reason)


# -- feeds ----------------------------------------------------------------------------------------
async def health_figures(console: Console) -> dict[str, Any]:
    collector = await data.collector_metrics(console.settings)
    worker = data.samples(console.worker.metrics.registry)
    # what the worker measures every 15 s (ma_consumer_lag), not asked of the broker again
    lag = sorted(
        [labels["group"], labels["topic"], int(value)]
        for labels, value in worker.get("ma_consumer_lag", [])
    )
    letters = data.by_label(collector, "ma_events_rejected_total", "source", "reason")
    for source, value in data.by_label(worker, "ma_worker_dead_letters_total", "source").items():
        letters[f"worker · {source}"] = letters.get(f"worker · {source}", 0) + value
    for key, value in data.by_label(worker, "ma_sink_dead_letters_total", "reason").items():
        letters[f"sink · {key}"] = letters.get(f"sink · {key}", 0) + value
    deliveries = await console.rows(data.DELIVERY_RETRIES)
    return {
        "events": int(await console.scalar(data.EVENTS_TOTAL)),
        "events_last_hour": int(await console.scalar(data.EVENTS_LAST_HOUR)),
        "accepted": int(data.total(collector, "ma_events_accepted_total")),
        "rejected": int(data.total(collector, "ma_events_rejected_total")),
        "unavailable": int(data.total(collector, "ma_http_requests_total", status="503")),
        "lag": sum(n for _, _, n in lag),
        "lag by topic": lag,
        "sink_retries": int(data.total(worker, "ma_sink_retries_total")),
        "delivery_retries": int(deliveries[0][0]) if deliveries else 0,
        "collector_reachable": bool(collector),
        "dead letters by reason": {k: int(v) for k, v in letters.items() if v},
    }


async def _health_feed(console: Console) -> dict[str, Any]:
    figures = await health_figures(console)
    return {k: f"{v:,}" if isinstance(v, int) else v for k, v in figures.items()}


async def _events_per_minute(console: Console) -> dict[str, Any]:
    rows = await console.rows(data.EVENTS_PER_MINUTE)
    minutes = sorted({r[0] for r in rows})
    types = sorted({str(r[1]) for r in rows})
    counts = {(r[0], str(r[1])): int(r[2]) for r in rows}
    return {
        "type": "bar",
        "stacked": True,
        "labels": [m.strftime("%H:%M") for m in minutes],
        # events/s over each minute (the SQL counts per minute)
        "datasets": [
            {"label": t, "data": [round(counts.get((m, t), 0) / 60, 2) for m in minutes]}
            for t in types
        ],
    }


def _bars(rows: list[list[Any]], label: str, horizontal: bool = False) -> dict[str, Any]:
    return {
        "type": "bar",
        "horizontal": horizontal,
        "labels": [str(r[0]) for r in rows],
        "datasets": [{"label": label, "data": [int(r[-1]) for r in rows]}],
    }


async def _identified_by_path(console: Console) -> dict[str, Any]:
    return _bars(await console.rows(data.IDENTIFIED_BY_PATH), "cookies", horizontal=True)


async def _activation_by_day(console: Console) -> dict[str, Any]:
    rows = await console.rows(data.ACTIVATION_BY_DAY)
    return {
        "type": "line",
        "labels": [str(r[0]) for r in rows],
        "datasets": [
            {"label": "cookies seen", "data": [int(r[1]) for r in rows]},
            {"label": "identified", "data": [int(r[2]) for r in rows]},
        ],
    }


async def _stages(console: Console) -> dict[str, Any]:
    return _bars(await console.rows(data.STAGES), "contacts")


async def _score_histogram(console: Console) -> dict[str, Any]:
    rows = await console.rows(data.SCORE_HISTOGRAM)
    return {
        "type": "bar",
        "labels": [f"{int(r[0])}–{int(r[0]) + 9}" for r in rows],
        "datasets": [{"label": "contacts", "data": [int(r[1]) for r in rows]}],
    }


async def _fired_by_rule(console: Console) -> dict[str, Any]:
    rows = await console.rows(data.FIRED_BY_RULE)
    return _bars([[f"{r[0]} ({r[1]})", r[2]] for r in rows], "fired", horizontal=True)


async def _skipped_by_reason(console: Console) -> dict[str, Any]:
    rows = await console.rows(data.SKIPPED_BY_REASON)
    return _bars([[f"{r[0]} · {r[1]}", r[2]] for r in rows], "skipped", horizontal=True)


async def _dead_letters(console: Console) -> dict[str, Any]:
    letters = (await health_figures(console))["dead letters by reason"]
    rows = sorted(([k, v] for k, v in letters.items()), key=lambda r: (-r[1], r[0]))
    return _bars(rows, "dead letters", horizontal=True)


async def _lag(console: Console) -> dict[str, Any]:
    rows = (await health_figures(console))["lag by topic"]
    return _bars(
        [[f"{group} · {topic}", lag] for group, topic, lag in rows], "records behind", True
    )


FEEDS: dict[str, Callable[[Console], Awaitable[Any]]] = {
    "health": _health_feed,
    "dead-letters": _dead_letters,
    "lag": _lag,
    "events-per-minute": _events_per_minute,
    "identified-by-path": _identified_by_path,
    "activation-by-day": _activation_by_day,
    "stages": _stages,
    "score-histogram": _score_histogram,
    "fired-by-rule": _fired_by_rule,
    "skipped-by-reason": _skipped_by_reason,
}
