"""The HTTP collector (CONTRACT §2): validates what sites, backends and email recipients send,
writes it durably to Kafka, and answers fast.

Every accepted event goes to ``ma.events``; every rejected input to ``ma.dead-letter`` with a
message a person can act on. ``/v1/batch`` answers ``200`` only after the broker acknowledged
every record of the request (``acks=all``), ``503`` with ``Retry-After`` otherwise.

Example::

    collector = Collector(settings, RulesWatcher(settings.config))
    web.run_app(collector.make_app(), port=settings.http_port)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from pipeline import codec, links
from pipeline.clock import Clock
from pipeline.collect import pages
from pipeline.collect.automation import BurstDetector, judge, prefetched
from pipeline.collect.cookies import (
    cookie_domain,
    is_uuid_text,
    read_anonymous_id,
    set_anonymous_id,
)
from pipeline.collect.http import (
    EnvelopeError,
    decoded_body,
    event_key,
    origin_allowed,
    read_limited,
    require,
    same_key,
)
from pipeline.collect.metrics import CollectorMetrics
from pipeline.collect.openapi import openapi_json
from pipeline.collect.ratelimit import RateLimiter
from pipeline.collect.segment_api import SegmentApi, is_segment_envelope, sent_by_segment_sdk
from pipeline.collect.segment_api import error_code as segment_code
from pipeline.collect.segments import SegmentEndpoints
from pipeline.collect.spool import Spool
from pipeline.collect.tag import Tag, not_modified
from pipeline.collect.validation import (
    Rejection,
    _is_http_url,
    _path,
    describe_validation_error,
    validate_events,
)
from pipeline.identity import (
    contact_id_for,
    email_rejection,
    is_garbage_identifier,
    new_id,
    normalize_email,
)
from pipeline.kafka import BrokerUnavailable, JsonProducer, Record
from pipeline.models.contacts import ContactsRequest, ContactUpsert
from pipeline.models.dead_letter import dead_letter_value
from pipeline.models.events import MAX_BATCH_BYTES, MAX_BATCH_EVENTS
from pipeline.rules import RulesWatcher, Site
from pipeline.rules.keys import Credential
from pipeline.rules.models import CONTACTS_WRITE, INGEST, PROFILES_READ
from pipeline.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
RETRY_AFTER = "5"
MAX_CONTACTS_BYTES = 4 * 1024 * 1024
NO_STORE = {"Cache-Control": "no-store, max-age=0"}
#: How long start-up waits for the broker before serving anyway (503s, /readyz 503).
CONNECT_WAIT = 10.0
SPOOL_INTERVAL = 1.0
SPOOL_BATCH = 500
UTF8_BOM = b"\xef\xbb\xbf"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Collector:
    """The collector's state: settings, rules in force, the producer, metrics, limiters."""

    def __init__(
        self,
        settings: Settings,
        rules: RulesWatcher,
        clock: Clock | None = None,
        producer: JsonProducer | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock or settings.clock()  # MA_CLOCK_FILE, as every process
        self.producer = producer or JsonProducer(settings, client_id="ma-collector")
        self.metrics = CollectorMetrics()
        self.limiter = RateLimiter()
        self.bursts = BurstDetector(rules.rules.identity)
        self.events_topic = settings.topic("events")
        self.dead_letter_topic = settings.topic("dead-letter")
        self.contact_updates_topic = settings.topic("contact-updates")
        self.tag = Tag.load(STATIC / "t.js")
        self.spool = Spool()
        self.metrics.spooled.set_function(lambda: len(self.spool))
        self._background: list[asyncio.Task[None]] = []
        self.profiles = ProfileSource(settings)
        self.segment_api = SegmentApi(self)

    # -- lifecycle -----------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_CONTACTS_BYTES + 1024, middlewares=[self._observe]
        )
        app.router.add_get("/t.js", self.tag_js)
        app.router.add_post("/v1/batch", self.batch)
        app.router.add_route("OPTIONS", "/v1/batch", self.preflight)
        app.router.add_get("/v1/p.gif", self.pixel)
        app.router.add_get("/c/{token}", self.click)
        app.router.add_get("/o/{token}.gif", self.email_open)
        app.router.add_get("/u/{token}", self.unsubscribe)
        app.router.add_post("/u/{token}", self.unsubscribe)
        app.router.add_post("/v1/contacts", self.contacts)
        app.router.add_get("/v1/profile", self.profile)
        SegmentEndpoints(self.settings, self.rules, self.authorize).add_routes(app)
        self.segment_api.add_routes(app)
        app.router.add_route("OPTIONS", "/v1/profile", self.preflight)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/openapi.json", self.openapi)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        # Serve even while the broker is away (liveness stays green; batches get 503), but
        # give a reachable broker the time to connect before the first request.
        connecting = asyncio.create_task(self.producer.start())
        self._background.append(connecting)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connecting), CONNECT_WAIT)
        if not connecting.done():
            log.warning("serving before the broker %s answers", self.settings.bootstrap)
        self._warn_disabled_keys()
        self._background.append(asyncio.create_task(self._watch_rules()))
        self._background.append(asyncio.create_task(self._drain_spool()))
        await self.profiles.start()
        _freeze_startup_objects()

    async def _on_cleanup(self, _app: web.Application) -> None:
        gc.unfreeze()  # what start-up made may be garbage once the app is gone (tests, reloads)
        for task in self._background:
            task.cancel()
        # Let a cancelled spool send put its records back before the last attempt below.
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.profiles.stop()
        if self.spool:
            with contextlib.suppress(BrokerUnavailable):
                await self._send_spooled()
            if self.spool:
                log.error("stopping with %d unsent record(s): they are lost", len(self.spool))
        await self.producer.stop()

    async def _drain_spool(self) -> None:
        while True:
            await asyncio.sleep(SPOOL_INTERVAL)
            with contextlib.suppress(BrokerUnavailable):
                await self._send_spooled()

    async def _send_spooled(self) -> None:
        """Re-send waiting records, oldest first, until none wait or the broker fails again."""
        while self.spool:
            batch = self.spool.take(SPOOL_BATCH)
            try:
                await self.deliver(batch)
            except BaseException:  # the broker failed again, or shutdown cancelled the send
                self.metrics.spool_dropped.inc(self.spool.put_back(batch))
                raise
            log.info("sent %d spooled record(s); %d wait", len(batch), len(self.spool))

    async def _watch_rules(self) -> None:
        while True:
            await asyncio.sleep(1)
            refusals = self.rules.refusals
            if self.rules.poll():
                self._warn_disabled_keys()
            if self.rules.refusals > refusals:
                self.metrics.rules_refused.inc()

    def _warn_disabled_keys(self) -> None:
        for line in self.rules.rules.keyring.disabled:
            log.warning("%s", line)

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.metrics.count_request(name, exc.status)
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            self.metrics.count_request(name, 500)
            return _json({"error": "internal error; the request was not accepted"}, 500)
        self.metrics.count_request(name, response.status)
        return response

    # -- helpers --------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def client_ip(self, request: web.Request) -> str:
        if self.settings.trust_forwarded:
            forwarded = request.headers.get("X-Forwarded-For", "")
            first = forwarded.split(",")[0].strip()
            if first:
                return first
        return request.remote or ""

    def dead_letter(self, source: str, error: str, payload: Any) -> Record:
        self.metrics.rejected.labels(source, _reason(error)).inc()
        value = dead_letter_value(self.now(), source, error, payload)
        return (self.dead_letter_topic, None, codec.dumps(value))

    async def deliver(self, records: list[Record]) -> None:
        """Send and wait for every acknowledgement; count broker failures."""
        started = time.perf_counter()
        try:
            await self.producer.send_all(records)
        except BrokerUnavailable:
            self.metrics.broker_errors.inc()
            raise
        self.metrics.produce_latency.observe(time.perf_counter() - started)

    async def deliver_best_effort(self, records: list[Record]) -> bool:
        """For endpoints that must answer no matter what (GIFs, redirects): records the broker
        does not acknowledge wait in the spool and are re-sent; False then."""
        try:
            await self.deliver(records)
        except BrokerUnavailable:
            self.metrics.spool_dropped.inc(self.spool.add(records))
            log.warning(
                "broker unavailable: %d record(s) spooled, %d wait", len(records), len(self.spool)
            )
            return False
        return True

    def count_accepted(self, site_id: str, accepted: list[dict[str, Any]]) -> None:
        """Count accepted events by type: one counter update per type, not per event."""
        counts: dict[str, int] = {}
        for value in accepted:
            counts[value["type"]] = counts.get(value["type"], 0) + 1
        for kind, count in counts.items():
            self.metrics.count_accepted(site_id, kind, count)

    def cors_headers(self, request: web.Request, site: Site | None) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if not origin:
            return {}
        sites = [site] if site is not None else self.rules.rules.sites
        if any(origin_allowed(s, origin) for s in sites):
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        return {"Vary": "Origin"}

    def rate_limited(self, site: Site, request: web.Request) -> bool:
        allowed = self.limiter.allow(
            (site.id, self.client_ip(request)),
            per_second=site.rate_limit.per_second,
            burst=site.rate_limit.burst,
            now=time.monotonic(),
        )
        if not allowed:
            self.metrics.rate_limited.labels(site.id).inc()
        return not allowed

    def cookie(self, request: web.Request) -> tuple[str | None, bool]:
        """The request's ``ma_aid`` (the first UUID-shaped one) or ``None``, and whether it sent
        any ``ma_aid`` at all (``read_anonymous_id``)."""
        return read_anonymous_id(request.headers.getall("Cookie", []))

    def cookie_aid(self, request: web.Request) -> str | None:
        """The request's ``ma_aid`` (the first UUID-shaped one), or ``None``."""
        return self.cookie(request)[0]

    def set_cookie_if_absent(
        self,
        response: web.StreamResponse,
        request: web.Request,
        site: Site | None,
        aid: str,
        cookie: tuple[str | None, bool],
    ) -> None:
        """Set ``ma_aid`` to ``aid`` unless the request carried a usable one already (``cookie``
        is what ``self.cookie(request)`` found)."""
        current, seen = cookie
        if current is not None:
            return
        set_anonymous_id(
            response,
            aid,
            domain=cookie_domain(site, request.host),
            secure=self.is_https(request),
            replace_garbage=seen,
        )

    def is_https(self, request: web.Request) -> bool:
        if self.settings.trust_forwarded:
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if proto:
                return proto == "https"
        return request.secure

    # -- endpoints ----------------------------------------------------------------------------
    async def tag_js(self, request: web.Request) -> web.Response:
        """``GET /t.js``: gzip when accepted; revalidated by ``ETag`` (``304``)."""
        body, encoding, etag = self.tag.variant(request.headers.get("Accept-Encoding", ""))
        headers = {"Cache-Control": "public, max-age=300", "ETag": etag, "Vary": "Accept-Encoding"}
        if not_modified(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        if encoding:
            headers["Content-Encoding"] = encoding
        return web.Response(
            body=body, content_type="application/javascript", charset="utf-8", headers=headers
        )

    async def preflight(self, request: web.Request) -> web.Response:
        headers = self.cors_headers(request, None)
        if "Access-Control-Allow-Origin" in headers:
            headers.update(
                {
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type, Authorization",
                    "Access-Control-Max-Age": "86400",
                }
            )
        return web.Response(status=204, headers=headers)

    async def batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batch``: up to 100 events; each bad one rejected alone."""
        source = "collector:/v1/batch"
        site: Site | None = None
        body: bytes | None = None
        try:
            body = await read_limited(request, MAX_BATCH_BYTES)
            envelope = _decode_envelope(body)
            if is_segment_envelope(envelope):
                return await self.segment_api.batch(request, body, envelope)
            events, site, trusted = self._batch_envelope(request, envelope)
        except EnvelopeError as exc:
            answer = {"error": exc.message}
            if sent_by_segment_sdk(request):  # what its SDKs read, beside what ours do
                answer.update(code=segment_code(exc.status), message=exc.message)
            letter = [self.dead_letter(source, exc.message, decoded_body(body, request))]
            if not await self.deliver_best_effort(letter) and exc.status != 413:
                return _json(
                    {"error": "the broker is unavailable; retry later"},
                    503,
                    {"Retry-After": RETRY_AFTER},
                )
            return _json(answer, exc.status, self.cors_headers(request, site))
        cors = self.cors_headers(request, site)
        if self.rate_limited(site, request):
            return _json(
                {"error": "rate limit exceeded; retry later"}, 429, {"Retry-After": "1", **cors}
            )
        result = validate_events(
            events,
            site_id=site.id,
            trusted=trusted,
            received_at=self.now(),
            user_agent=request.headers.get("User-Agent"),
        )
        topic = self.events_topic
        records: list[Record] = [
            (topic, event_key(value), codec.dumps(value)) for value in result.accepted
        ]
        records += [self.dead_letter(source, r.error, r.payload) for r in result.rejected]
        try:
            await self.deliver(records)
        except BrokerUnavailable:
            return _json(
                {"error": "the broker did not acknowledge; retry later"},
                503,
                {"Retry-After": RETRY_AFTER, **cors},
            )
        self.count_accepted(site.id, result.accepted)
        return _json(
            {
                "accepted": len(result.accepted),
                "rejected": [{"index": r.index, "error": r.error} for r in result.rejected],
            },
            200,
            cors,
        )

    def _batch_envelope(
        self, request: web.Request, envelope: object
    ) -> tuple[list[Any], Site, bool]:
        """The events, site and trust of our own ``/v1/batch`` body (``{"site_id", "events"}``)."""
        if not isinstance(envelope, dict):
            raise EnvelopeError(400, 'body must be a JSON object {"site_id", "events": [...]}')
        site_id = envelope.get("site_id")
        if not isinstance(site_id, str) or not site_id:
            raise EnvelopeError(400, "site_id: required (text)")
        site = self.rules.rules.site(site_id)
        if site is None:
            raise EnvelopeError(400, f"site_id: unknown site {site_id[:100]!r}")
        trusted = self._authenticate(request, site, envelope.get("write_key"))
        events = envelope.get("events")
        if not isinstance(events, list):
            raise EnvelopeError(400, "events: required (a JSON array of event objects)")
        if len(events) > MAX_BATCH_EVENTS:
            raise EnvelopeError(
                413, f"events: at most {MAX_BATCH_EVENTS} events per batch, got {len(events)}"
            )
        if not events:
            raise EnvelopeError(400, "events: empty; send at least one event")
        return events, site, trusted

    def _authenticate(self, request: web.Request, site: Site, write_key: object) -> bool:
        """True for a key with ``ingest:<site>``, False for the site's write key; EnvelopeError
        otherwise (400 for no such key, 403 for a key without that scope)."""
        authorization = request.headers.get("Authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            credential = self.identify(token) if scheme.lower() == "bearer" else None
            if credential is None:
                raise EnvelopeError(
                    400, f"Authorization: not a valid server key for site {site.id!r}"
                )
            require(credential, INGEST + site.id)
            return True
        if not isinstance(write_key, str) or not same_key(write_key, site.write_key):
            raise EnvelopeError(400, f"write_key: missing or wrong for site {site.id!r}")
        origin = request.headers.get("Origin")
        if origin and not origin_allowed(site, origin):
            raise EnvelopeError(400, f"Origin {origin[:200]!r} is not allowed for site {site.id!r}")
        return False

    async def pixel(self, request: web.Request) -> web.Response:
        """``GET /v1/p.gif``: an event from a page without JavaScript; always the GIF."""
        query = request.query
        site = self.rules.rules.site(query.get("site_id", ""))
        # The page's own aid (query) first, then the cookie, else a new one for both.
        given = query.get("aid", "")
        cookie = self.cookie(request)
        aid = given if given and not is_garbage_identifier(given) else cookie[0] or new_id()
        response = web.Response(body=pages.GIF, content_type="image/gif", headers=NO_STORE)
        self.set_cookie_if_absent(
            response, request, site, aid if is_uuid_text(aid) else new_id(), cookie
        )
        source = "collector:/v1/p.gif"
        raw = dict(query)
        if site is None or not same_key(query.get("key", ""), site.write_key):
            what = "site_id: unknown site" if site is None else "key: missing or wrong write key"
            await self.deliver_best_effort([self.dead_letter(source, what, raw)])
            return response
        if self.rate_limited(site, request):
            return response
        event = {
            "type": query.get("type", "page_view"),
            "anonymous_id": aid,
            "url": query.get("url") or request.headers.get("Referer"),
            "referrer": query.get("ref"),
            "title": query.get("title"),
            "name": query.get("name"),
        }
        event = {k: v for k, v in event.items() if v}
        result = validate_events(
            [event],
            site_id=site.id,
            trusted=False,
            received_at=self.now(),
            user_agent=request.headers.get("User-Agent"),
        )
        records: list[Record] = [
            (self.events_topic, event_key(v), codec.dumps({**v, "source": "pixel"}))
            for v in result.accepted
        ]
        records += [
            self.dead_letter(source, r.error.replace("events[0]", "query"), raw)
            for r in result.rejected
        ]
        if await self.deliver_best_effort(records):
            self.count_accepted(site.id, result.accepted)
        return response

    def _verify(self, token: str, purpose: links.Purpose) -> links.LinkClaims:
        return links.verify(token, keys=self.settings.link_keys, now=self.now(), purpose=purpose)

    def _email_event(
        self, request: web.Request, claims: links.LinkClaims, kind: str, aid: str | None
    ) -> dict[str, Any]:
        now = self.now()
        reason = judge(
            method=request.method,
            user_agent=request.headers.get("User-Agent"),
            ip=self.client_ip(request),
            issued_at=claims.issued_at,
            now=now,
            rules=self.rules.rules.identity,
            kind="open" if kind == "email_open" else "click",
        )
        if reason is None and kind == "email_click":
            self.bursts.rules = self.rules.rules.identity
            reason = self.bursts.observe(claims.contact_id, claims.campaign_id, claims.link_id, now)
        event: dict[str, Any] = {
            "event_id": new_id(),
            "type": kind,
            "site_id": claims.site_id or "email",
            "received_at": now,
            "source": "email",
            "contact_id": claims.contact_id,
        }
        if aid:
            event["anonymous_id"] = aid
        if claims.url:
            event["url"] = claims.url
            event["path"] = _path(claims.url)
        if claims.campaign_id:
            event["campaign_id"] = claims.campaign_id
        if claims.link_id:
            event["properties"] = {"link_id": claims.link_id}
        if reason:
            event["automated"] = True
            event["automated_reason"] = reason
            self.metrics.automated.labels(reason.split(":")[0]).inc()
        user_agent = request.headers.get("User-Agent")
        if user_agent:
            event["user_agent"] = user_agent[:512]
        return event

    def _bad_token(
        self, request: web.Request, token: str, exc: links.LinkError
    ) -> tuple[Record, str | None]:
        """The dead letter for a refused token, and the fallback URL of its (claimed) site."""
        route = "/" + request.path.split("/")[1]
        record = self.dead_letter(
            f"collector:{route}",
            f"{exc.reason}: {exc.message}",
            {
                "token": token[:1024],
                "method": request.method,
                "user_agent": request.headers.get("User-Agent", "")[:512],
            },
        )
        site = self._site_of(_claimed_site_id(token))
        return record, site.fallback_url if site is not None else None

    def _site_of(self, site_id: str | None) -> Site | None:
        """A token's site; the only site when it names none (single-site deployments)."""
        site = self.rules.rules.site(site_id or "")
        if site is None and len(self.rules.rules.sites) == 1:
            site = self.rules.rules.sites[0]
        return site

    async def click(self, request: web.Request) -> web.StreamResponse:
        """``GET /c/{token}``: record ``email_click`` and redirect to the signed URL only."""
        token = request.match_info["token"]
        try:
            claims = self._verify(token, "click")
        except links.LinkError as exc:
            record, fallback = self._bad_token(request, token, exc)
            await self.deliver_best_effort([record])
            if fallback:
                raise web.HTTPFound(
                    fallback, headers={**NO_STORE, "Referrer-Policy": "no-referrer"}
                ) from None
            return web.Response(
                status=400, text=pages.BAD_LINK, content_type="text/html", headers=NO_STORE
            )
        cookie = self.cookie(request)
        aid = cookie[0] or new_id()
        event = self._email_event(request, claims, "email_click", aid)
        await self.deliver_best_effort([(self.events_topic, event_key(event), codec.dumps(event))])
        self.metrics.count_accepted(event["site_id"], "email_click")
        assert claims.url is not None  # click tokens always carry one (links.verify checks)
        response = _redirect(claims.url)
        self.set_cookie_if_absent(response, request, self._site_of(claims.site_id), aid, cookie)
        return response

    async def email_open(self, request: web.Request) -> web.Response:
        """``GET /o/{token}.gif``: record ``email_open``; always the GIF."""
        token = request.match_info["token"]
        response = web.Response(body=pages.GIF, content_type="image/gif", headers=NO_STORE)
        try:
            claims = self._verify(token, "open")
        except links.LinkError as exc:
            record, _ = self._bad_token(request, token, exc)
            await self.deliver_best_effort([record])
            return response
        aid = self.cookie_aid(request)
        event = self._email_event(request, claims, "email_open", aid)
        await self.deliver_best_effort([(self.events_topic, event_key(event), codec.dumps(event))])
        self.metrics.count_accepted(event["site_id"], "email_open")
        return response

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """``GET|POST /u/{token}``: one-click unsubscribe (RFC 8058).

        A POST (the mail client's one-click, or the confirmation button) unsubscribes at once.
        A GET unsubscribes at once too, unless a link scanner or a preview made it by itself
        (``automation.prefetched``: a scanner's user agent or network, ``HEAD``, a bot; a plain
        HTTP library's GET is a person's program and unsubscribes): then it shows a one-button
        confirmation page and changes nothing.
        """
        token = request.match_info["token"]
        html_headers = {**NO_STORE, "Referrer-Policy": "no-referrer"}
        try:
            claims = self._verify(token, "unsubscribe")
        except links.LinkError as exc:
            record, _ = self._bad_token(request, token, exc)
            await self.deliver_best_effort([record])
            return web.Response(
                status=400, text=pages.BAD_LINK, content_type="text/html", headers=html_headers
            )
        aid = self.cookie_aid(request)
        event = self._email_event(request, claims, "unsubscribe", aid)
        # Not POST (GET, or HEAD from a link checker) and prefetched: ask a person to confirm.
        if request.method != "POST" and prefetched(event.get("automated_reason")):
            return web.Response(
                text=pages.confirm_unsubscribe(request.path),
                content_type="text/html",
                headers=html_headers,
            )
        event.pop("automated", None)  # an explicit unsubscribe counts, whoever sends it
        event.pop("automated_reason", None)
        try:
            await self.deliver([(self.events_topic, event_key(event), codec.dumps(event))])
        except BrokerUnavailable:
            return web.Response(
                status=503,
                text=pages.page(
                    "Please try again", "<p>We could not record your request. Please try again.</p>"
                ),
                content_type="text/html",
                headers={**html_headers, "Retry-After": RETRY_AFTER},
            )
        self.metrics.count_accepted(event["site_id"], "unsubscribe")
        return web.Response(text=pages.UNSUBSCRIBED, content_type="text/html", headers=html_headers)

    async def contacts(self, request: web.Request) -> web.Response:
        """``POST /v1/contacts``: CRM upserts (server key) onto ``ma.contact-updates``."""
        source = "collector:/v1/contacts"
        try:
            body = await read_limited(request, MAX_CONTACTS_BYTES)
            credential = self.bearer(request, CONTACTS_WRITE)
            raw = codec.loads(body)
            envelope = ContactsRequest.model_validate(raw)
        except EnvelopeError as exc:
            await self.deliver_best_effort([self.dead_letter(source, exc.message, None)])
            return _json({"error": exc.message}, exc.status, _challenge(exc.status))
        except codec.JSONDecodeError as exc:
            message = f"body is not valid JSON: {exc}"
            await self.deliver_best_effort(
                [self.dead_letter(source, message, decoded_body(body, request))]
            )
            return _json({"error": message}, 400)
        except ValueError as exc:  # pydantic ValidationError
            from pydantic import ValidationError

            message = (
                describe_validation_error(exc, "body")
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            await self.deliver_best_effort([self.dead_letter(source, message, raw)])
            return _json(
                {"error": message}, 413 if "at most" in message and "contacts" in message else 400
            )
        now = self.now()
        records: list[Record] = []
        rejected: list[Rejection] = []
        for index, item in enumerate(envelope.contacts):
            prefix = f"contacts[{index}]"
            try:
                contact = ContactUpsert.model_validate(item)
            except ValueError as exc:
                from pydantic import ValidationError

                error = (
                    describe_validation_error(exc, prefix)
                    if isinstance(exc, ValidationError)
                    else f"{prefix}: {exc}"
                )
                rejected.append(Rejection(index, error, item))
                continue
            email = normalize_email(contact.email)
            problem = email_rejection(email)
            if problem:
                rejected.append(Rejection(index, f"{prefix}.email: {problem}", item))
                continue
            contact_id = str(contact_id_for(email))
            update = {
                "contact_id": contact_id,
                "op": "upsert",
                "source": envelope.source,
                "email": email,
                "attributes": contact.attributes,
                "consent_email": contact.consent_email,
                "crm_status": contact.crm_status,
                "crm_id": contact.crm_id,
                "created_at": contact.created_at,
                "received_at": now,
                "site_id": credential.site,
            }
            update = {k: v for k, v in update.items() if v is not None}
            records.append((self.contact_updates_topic, contact_id.encode(), codec.dumps(update)))
        records += [self.dead_letter(source, r.error, r.payload) for r in rejected]
        try:
            await self.deliver(records)
        except BrokerUnavailable:
            return _json(
                {"error": "the broker did not acknowledge; retry later"},
                503,
                {"Retry-After": RETRY_AFTER},
            )
        accepted = len(envelope.contacts) - len(rejected)
        return _json(
            {
                "accepted": accepted,
                "rejected": [{"index": r.index, "error": r.error} for r in rejected],
            },
            200,
        )

    def identify(self, secret: str) -> Credential | None:
        """The key (of ``keys:`` or a site's server key) this secret is, counted by its id."""
        credential = self.rules.rules.keyring.identify(secret.strip())
        if credential is not None:
            self.metrics.count_key_use(credential.id)
        return credential

    def bearer(self, request: web.Request, scope: str) -> Credential:
        """The ``Authorization: Bearer`` key of the request if it holds ``scope``; else
        EnvelopeError 401 (no key, or not one of ours) or 403 (naming the scope)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EnvelopeError(401, "Authorization: Bearer <server key> is required")
        credential = self.identify(token)
        if credential is None:
            raise EnvelopeError(401, "Authorization: not a valid server key")
        require(credential, scope)
        return credential

    async def authorize(self, request: web.Request, scope: str) -> Credential | web.Response:
        """For read endpoints: the request's key holding ``scope``, or the 401/403 answer
        (its dead letter sent)."""
        try:
            return self.bearer(request, scope)
        except EnvelopeError as exc:
            letter = self.dead_letter(f"collector:{request.path}", exc.message, None)
            await self.deliver_best_effort([letter])
            return _json({"error": exc.message}, exc.status, _challenge(exc.status))

    async def profile(self, request: web.Request) -> web.Response:
        """``GET /v1/profile?aid=``: segments and active web triggers of a cookie (no PII)."""
        cors = self.cors_headers(request, None)
        if request.headers.get("Authorization"):  # a backend's call: its key needs the scope
            credential = await self.authorize(request, PROFILES_READ)
            if isinstance(credential, web.Response):
                return credential
        aid = request.query.get("aid") or self.cookie_aid(request) or ""
        if not aid or is_garbage_identifier(aid) or len(aid) > 128:
            return _json({"error": "aid: required (the ma_aid cookie value)"}, 400, cors)
        if not _PROFILE_ID.fullmatch(aid):
            return _json(
                {
                    "error": "aid: not a cookie id (the ma_aid cookie value: letters, digits "
                    "and . _ : @ + = -, starting with a letter or digit)"
                },
                400,
                cors,
            )
        try:
            view = await self.profiles.get(aid)
        except ProfileUnavailable as exc:
            return _json(
                {"error": f"profiles are not available right now ({exc}); retry later"},
                503,
                {"Retry-After": RETRY_AFTER, **cors},
            )
        return _json(view, 200, {**cors, **NO_STORE})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def readyz(self, request: web.Request) -> web.Response:
        ready = await self.producer.ready()
        self.metrics.broker_ready.set(1 if ready else 0)
        if ready:
            return _json({"status": "ready", "broker": "reachable"}, 200)
        return _json(
            {"status": "not ready", "broker": "unreachable"}, 503, {"Retry-After": RETRY_AFTER}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        """``GET /openapi.json``: this collector's OpenAPI 3.1 document."""
        return web.Response(
            body=openapi_json(), content_type="application/json", headers=self.cors_headers(
                request, None))  # fmt: skip

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


class ProfileUnavailable(Exception):
    """The worker's profile view did not answer."""


class ProfileSource:
    """``/v1/profile`` answers from the worker's state, through the worker API
    (``MA_WORKER_URL``): the cookie's segments and active web triggers, never PII."""

    def __init__(self, settings: Settings, timeout: float = 0.5) -> None:
        self.url = f"{settings.worker_api}/profile/"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=self.timeout)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(self, anonymous_id: str) -> dict[str, Any]:
        if self._http is None:
            raise ProfileUnavailable("not started")
        try:
            async with self._http.get(self.url + quote(anonymous_id, safe="")) as response:
                if response.status != 200:
                    raise ProfileUnavailable(f"worker answered {response.status}")
                view: dict[str, Any] = codec.loads(await response.read())
                return view
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProfileUnavailable(type(exc).__name__) from exc


# -- small pure helpers ----------------------------------------------------------------------
def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, validators, rules, clients) out of every later garbage
    collection. A batch of events allocates thousands of objects, so full collections come
    every few requests, and each walked every object of the process: ~12% of the collector's
    CPU under load, a fifth of that once these are frozen (``gc.freeze``)."""
    gc.collect()
    gc.freeze()


def _decode_envelope(body: bytes) -> object:
    try:
        # Whatever the Content-Type: the tag sends text/plain (no CORS preflight).
        return codec.loads(body.removeprefix(UTF8_BOM))
    except codec.JSONDecodeError as exc:
        raise EnvelopeError(400, f"body is not valid JSON: {exc}") from exc


def _redirect(url: str) -> web.Response:
    """The ``302`` of a click, as ``raise web.HTTPFound(url)`` answers it (``Location``
    normalised by yarl, the text ``302: Found``), made without the exception's costly setters."""
    headers = {
        **NO_STORE,
        "Referrer-Policy": "no-referrer",
        "Content-Type": "text/plain; charset=utf-8",
        "Location": str(URL(url)),
    }
    return web.Response(status=302, body=b"302: Found", headers=headers)


def _challenge(status: int) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 (no key, or not one of ours); nothing for a 403."""
    return {"WWW-Authenticate": "Bearer"} if status == 401 else {}


def _json(value: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=codec.dumps(value), status=status, content_type="application/json", headers=headers
    )


def _claimed_site_id(token: str) -> str | None:
    """The site a refused token claims, only to pick a *configured* fallback URL (never a URL
    from the token: no open redirect)."""
    try:
        head = token.split(".", 1)[0][:4096]
        payload = codec.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, TypeError):
        return None
    site = payload.get("s") if isinstance(payload, dict) else None
    return site if isinstance(site, str) else None


#: What a cookie id (ours a UUID, an SDK's anonymousId) may be, to be looked up: id characters,
#: never a path (``..``), a template (``{c:String}``) or a lookup (``${jndi:…}``).
_PROFILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]*")
_INDEX = re.compile(r"\[\d+\]")
_FIRST_WORD = re.compile(r"[\w.\[\]-]+")


def _reason(error: str) -> str:
    """A bounded metric label for a rejection: its field path (``events[].url``) or reason word."""
    match = _FIRST_WORD.match(error)
    return _INDEX.sub("[]", match.group(0))[:60] if match else "other"


__all__ = ["Collector", "EnvelopeError", "ProfileSource", "ProfileUnavailable", "_is_http_url"]
