"""``python -m bench.run_collector collector|bare``: an HTTP server for the collector benchmarks,
in its own process so that the load generator does not share its core's GIL.

- ``collector``: the real ``pipeline.collect.app.Collector`` set up as ``ma-pipeline collector``
  does (``pipeline.collect.server.serve``: aiohttp ``AppRunner`` without access log, a
  ``TCPSite`` with backlog 1024), writing to the broker of ``MA_KAFKA_BOOTSTRAP``. The rules of
  ``MA_CONFIG`` are swapped in with the sites' rate limits raised (every request of a load
  generator comes from one IP), as the tests swap rules.
- ``bare``: the same server setup with handlers on the same paths that do the least a server
  can: parse the JSON body and answer, answer the GIF, answer the redirect. No Kafka.
- ``bare-produce``: ``bare`` that also produces each event to the broker with aiokafka's plain
  ``send()`` and answers once it is acknowledged: the least a collector that keeps its promise
  (an accepted event is on the topic) can do.

Both print ``listening on <port>`` once they accept requests, and stop on SIGTERM.
``--profile FILE`` writes cProfile stats (to see where the collector spends its time).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from pathlib import Path

import orjson
from aiohttp import web

from pipeline.collect.pages import GIF
from pipeline.settings import Settings

#: Every request of a load generator comes from 127.0.0.1: the per-IP limit must not apply.
RATE_LIMIT = "rate_limit: {per_second: 100000000, burst: 100000000}"


def bench_rules_text(text: str) -> str:
    """The rules file with every site's rate limit raised far above any bench rate."""
    raised, count = re.subn(r"rate_limit:\s*\{[^}]*\}", RATE_LIMIT, text)
    if not count:
        raise ValueError("no sites[].rate_limit in the rules file to raise")
    return raised


def bare_app() -> web.Application:
    async def batch(request: web.Request) -> web.Response:
        envelope = orjson.loads(await request.read())
        if "batch" in envelope:  # Segment's shape: parsed the same, answered as Segment does
            answer: dict[str, object] = {"success": len(envelope["batch"]) > 0}
        else:
            answer = {"accepted": len(envelope["events"]), "rejected": []}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def pixel(request: web.Request) -> web.Response:
        request.query.get("aid")
        return web.Response(body=GIF, content_type="image/gif")

    async def click(request: web.Request) -> web.Response:
        request.match_info.get("token")
        return web.Response(status=302, headers={"Location": "https://www.acme.example/pricing"})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    app.router.add_get("/v1/p.gif", pixel)
    app.router.add_get("/c/{token}", click)
    return app


def bare_produce_app(settings: Settings) -> web.Application:
    """``bare`` plus the work that makes a collector's answer mean something: every event of a
    batch (and the pixel's and click's one) produced to the events topic with plain aiokafka
    ``send()`` (acks=all, idempotent, as the collector's producer), answered once the broker
    acknowledged them. Keyed by the event's cookie, as the collector keys them."""
    from aiokafka import AIOKafkaProducer

    topic = settings.topic("events")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )

    async def start(app: web.Application) -> None:
        await producer.start()

    async def stop(app: web.Application) -> None:
        await producer.stop()

    async def produce(events: list[dict[str, object]]) -> None:
        sent = []
        for event in events:
            aid = event.get("anonymous_id") or event.get("anonymousId")
            key = str(aid).encode() if aid else None
            sent.append(await producer.send(topic, orjson.dumps(event), key=key))
        await asyncio.gather(*sent)

    async def batch(request: web.Request) -> web.Response:
        envelope = orjson.loads(await request.read())
        if "batch" in envelope:
            await produce(envelope["batch"])
            answer: dict[str, object] = {"success": len(envelope["batch"]) > 0}
        else:
            await produce(envelope["events"])
            answer = {"accepted": len(envelope["events"]), "rejected": []}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def pixel(request: web.Request) -> web.Response:
        await produce([{"type": "page_view", "anonymous_id": request.query.get("aid")}])
        return web.Response(body=GIF, content_type="image/gif")

    async def click(request: web.Request) -> web.Response:
        await produce([{"type": "email_click", "token": request.match_info.get("token")}])
        return web.Response(status=302, headers={"Location": "https://www.acme.example/pricing"})

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/batch", batch)
    app.router.add_get("/v1/p.gif", pixel)
    app.router.add_get("/c/{token}", click)
    return app


def collector_app(settings: Settings) -> web.Application:
    from pipeline.collect.app import Collector
    from pipeline.rules import RulesWatcher, parse_rules

    collector = Collector(settings, RulesWatcher(settings.config))
    collector.rules.rules = parse_rules(bench_rules_text(settings.config.read_text()))
    return collector.make_app()


async def serve(mode: str) -> None:
    settings = Settings()
    if mode == "collector":
        app = collector_app(settings)
    else:
        app = bare_produce_app(settings) if mode == "bare-produce" else bare_app()
    # as pipeline.collect.server.serve sets it up
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()  # the collector connects its producer here (on_startup)
    site = web.TCPSite(
        runner, settings.http_host, settings.http_port, backlog=1024, reuse_address=True
    )
    await site.start()
    print(f"listening on {settings.http_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run_collector")
    parser.add_argument("mode", choices=("collector", "bare", "bare-produce"))
    parser.add_argument("--profile", type=Path, help="write cProfile stats here when stopped")
    args = parser.parse_args()
    if args.profile is None:
        asyncio.run(serve(args.mode))
        return
    import cProfile

    with cProfile.Profile() as profile:
        asyncio.run(serve(args.mode))
    profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
