"""The collector over HTTP, next to a bare aiohttp server on the same setup.

Three servers run side by side in their own processes (``bench.run_collector``): the real
collector, writing every event to the run's broker (``acks=all``; a ``200`` means durable),
a bare aiohttp app on the same paths that only parses the JSON and answers, and the same bare
app producing each event with aiokafka's plain ``send()`` before it answers (the baseline of
batches: the least a collector that keeps its promise does). ``wrk`` (one
thread, ``CONNECTIONS`` keep-alive connections, its own process) drives each endpoint for
``SECONDS`` per run, alternating bare and real run by run so that both see the same machine;
a warm-up run of each comes first. Figures: requests (or events) per second, p50/p99 latency
from ``wrk``, and the server process's CPU use (so "per core" figures can be read off).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from bench import BenchContext, Measurement, Section, section
from bench.procs import Child, free_port
from bench.report import REPO
from bench.traffic import browser_events, segment_calls
from pipeline import links
from pipeline.settings import Settings
from pipeline.topics import ensure_topics

SITE = "acme"
WRITE_KEY = "wk_acme_public_7d1f3a"
CONNECTIONS = 64
LUA = REPO / "bench" / "wrk.lua"
#: How many different request lines each endpoint cycles through.
VARIANTS = 2_000


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    events_per_request: int
    description: str


ENDPOINTS = (
    Endpoint("batch_1", "POST", "/v1/batch", 1, "POST /v1/batch, 1 event"),
    Endpoint("batch_20", "POST", "/v1/batch", 20, "POST /v1/batch, 20 events"),
    Endpoint("batch_100", "POST", "/v1/batch", 100, "POST /v1/batch, 100 events"),
    Endpoint("segment_100", "POST", "/v1/batch", 100, "POST /v1/batch, 100 Segment calls"),
    Endpoint("pixel", "GET", "/v1/p.gif", 1, "GET /v1/p.gif"),
    Endpoint("click", "GET", "/c/{token}", 1, "GET /c/{token}, 302"),
)


@dataclass
class WrkRun:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float  # CPUs the server process used during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _request_file(ctx: BenchContext, endpoint: Endpoint, settings: Settings) -> Path:
    """``VARIANTS`` request lines for ``endpoint`` (bodies, or paths with a cookie)."""
    path = ctx.scratch / "wrk" / f"{endpoint.name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    if endpoint.method == "POST":
        per = endpoint.events_per_request
        count = max(min(VARIANTS, 20_000 // per), 50)
        events = browser_events(count * per, seed=11 + per)
        for i in range(count):
            chunk = events[i * per : (i + 1) * per]
            if endpoint.name.startswith("segment"):  # what analytics.js's batching sends
                body: dict[str, Any] = {"batch": segment_calls(chunk), "writeKey": WRITE_KEY}
            else:
                body = {"site_id": SITE, "write_key": WRITE_KEY, "events": chunk}
            lines.append(orjson.dumps(body).decode())
    elif endpoint.name == "pixel":
        for event in browser_events(VARIANTS, seed=5):
            query = {"site_id": SITE, "key": WRITE_KEY, "aid": event["anonymous_id"],
                     "type": "page_view", "url": event["url"], "title": event["title"]}  # fmt: skip
            if event.get("referrer"):
                query["ref"] = event["referrer"]
            lines.append(f"/v1/p.gif?{urlencode(query)}\tma_aid={event['anonymous_id']}")
    else:  # a recipient's click in the same browser, an hour after the mail was sent
        sent = datetime.now(UTC) - timedelta(hours=1)
        for i in range(VARIANTS):
            token = links.sign(contact_id=str(uuid.uuid4()), url=f"https://www.acme.example/pricing?v={i}",
                               campaign_id="spring", link_id="hero", site_id=SITE,
                               keys=settings.link_keys, now=sent)  # fmt: skip
            lines.append(f"/c/{token}\tma_aid={uuid.uuid4()}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def _wrk(server: Child, port: int, endpoint: Endpoint, file: Path, seconds: int) -> WrkRun:
    url = f"http://127.0.0.1:{port}"
    args = ["-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
            url, "--", endpoint.method, str(file), endpoint.path]  # fmt: skip
    cpu0 = server.cpu_seconds()
    process = await asyncio.create_subprocess_exec(
        "wrk", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    cpu = server.cpu_seconds() - cpu0
    text = output.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCH_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text[-2000:]}")
    data = orjson.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors > 0.001 * max(data["requests"], 1):
        raise RuntimeError(
            f"{endpoint.description} on {server.log.stem}: {errors} errors in "
            f"{data['requests']} requests (non-2xx/3xx, timeouts, …): {data}\n"
            f"{server.text()[-2000:]}"
        )
    run_seconds = data["duration_us"] / 1e6
    return WrkRun(data["requests"], run_seconds, errors, data["p50_us"] / 1000,
                  data["p99_us"] / 1000, cpu / run_seconds)  # fmt: skip


async def _check(port: int, endpoint: Endpoint, file: Path) -> None:
    """One request of the file by hand: the collector must accept it as a real client's."""
    import aiohttp

    line = (await asyncio.to_thread(file.read_text)).split("\n", 1)[0]
    url = f"http://127.0.0.1:{port}"
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.0.0 Safari/537.36"}
    async with aiohttp.ClientSession() as http:
        if endpoint.method == "POST":
            async with http.post(url + endpoint.path, data=line, headers=headers) as response:
                answer = await response.json(content_type=None)
                expected = (
                    {"success": True}
                    if endpoint.name.startswith("segment")
                    else {"accepted": endpoint.events_per_request, "rejected": []}
                )
                ok = response.status == 200 and answer == expected
        else:
            target, _, cookie = line.partition("\t")
            headers["Cookie"] = cookie
            async with http.get(url + target, headers=headers, allow_redirects=False) as response:
                answer = (response.status, response.headers.get("Location"))
                ok = response.status == (302 if endpoint.name == "click" else 200)
                ok = ok and (endpoint.name != "click" or "acme.example" in str(answer[1]))
    if not ok:
        raise RuntimeError(f"{endpoint.description}: unexpected answer {answer}")


def _summary(runs: list[WrkRun], per_request: int) -> tuple[Measurement, dict[str, Any]]:
    rates = Measurement([r.rate * per_request for r in runs])
    extra = {
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
        "server_cpu": round(statistics.median(r.server_cpu for r in runs), 2),
        "requests_per_s": round(statistics.median(r.rate for r in runs)),
        "errors": sum(r.errors for r in runs),
    }
    extra["per_core"] = round(rates.median / max(extra["server_cpu"], 0.01))
    return rates, extra


def _describe(extra: dict[str, Any], unit: str) -> str:
    return (f"p50 {extra['p50_ms']:.1f} ms, p99 {extra['p99_ms']:.1f} ms; server "
            f"{extra['server_cpu']:.2f} CPU = {extra['per_core']:,} {unit} per core")  # fmt: skip


#: an endpoint whose bodies hold the same events as another's, in another API's shape
SAME_EVENTS = {"segment_100": "batch_100"}
GOALS = {
    "batch_1": "goal >= 0.5 x bare and >= 15k req/s",
    "batch_20": "goal >= 0.5 x bare and >= 150k events/s per core",
    "batch_100": "goal >= 0.5 x bare and >= 150k events/s per core",
    "segment_100": "goal: as fast as our own batch_100",
    "pixel": "goal >= 0.5 x bare",
    "click": "goal >= 0.5 x bare",
}


@section("collector")
async def collector(ctx: BenchContext, out: Section) -> None:
    """The real collector (aiohttp, acks=all) vs a bare aiohttp handler, driven by wrk."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk): the load generator")
    seconds = 1 if ctx.quick else 2
    settings = ctx.settings.model_copy(
        update={
            "topic_prefix": f"{ctx.settings.topic_prefix}collector.",
            "config": REPO / "config" / "rules.yaml",
        }
    )
    ctx.created_topics += await ensure_topics(settings)
    files = {e.name: _request_file(ctx, e, settings) for e in ENDPOINTS}
    ports = {"bare": free_port(), "bare-produce": free_port(), "collector": free_port()}
    servers = {
        mode: Child.start(
            ctx,
            ["-m", "bench.run_collector", mode],
            settings.model_copy(update={"http_port": port}),
            f"http-{mode}",
        )
        for mode, port in ports.items()
    }
    try:
        for server in servers.values():
            await server.wait_for("listening on", timeout=30)
        ctx.log(f"wrk -t1 -c{CONNECTIONS}, {seconds} s per run, bare and collector in turn")
        medians: dict[str, float] = {}  # the collector's, per endpoint
        for endpoint in ENDPOINTS:
            await _check(ports["collector"], endpoint, files[endpoint.name])
            runs: dict[str, list[WrkRun]] = {mode: [] for mode in servers}
            for i in range(-1, 3):  # a warm-up, then three runs each
                for mode, server in servers.items():
                    run = await _wrk(server, ports[mode], endpoint, files[endpoint.name],
                                     1 if i < 0 else seconds)  # fmt: skip
                    if i >= 0:
                        runs[mode].append(run)
            per = endpoint.events_per_request
            unit = "req/s" if per == 1 else "events/s"
            bare, bare_extra = _summary(runs["bare"], per)
            name = f"collector.bare.{endpoint.name}"
            out.add(name, bare, unit, note=f"bare aiohttp, {endpoint.description}; "
                    + _describe(bare_extra, unit), extra=bare_extra)  # fmt: skip
            produced, produced_extra = _summary(runs["bare-produce"], per)
            producing = f"collector.bare_produce.{endpoint.name}"
            out.add(producing, produced, unit, baseline=name,
                    note=f"bare aiohttp that also produces each event (aiokafka send(), "
                    f"acks=all), {endpoint.description}; " + _describe(produced_extra, unit),
                    extra=produced_extra)  # fmt: skip
            real, real_extra = _summary(runs["collector"], per)
            note = f"{endpoint.description}; " + _describe(real_extra, unit)
            if per > 1:
                note += f"; {real_extra['requests_per_s']:,} req/s"
            # batches against the handler that produces them too (what a collector must do at
            # least); single events, pixels and clicks against the bare handler, as before
            baseline = producing if per > 1 else name
            real_extra[f"ratio_to_{'bare' if per > 1 else 'bare_produce'}"] = round(
                real.median / (bare.median if per > 1 else produced.median), 3
            )
            medians[endpoint.name] = real.median
            if endpoint.name in SAME_EVENTS:  # Segment's calls beside our own batches
                ours = SAME_EVENTS[endpoint.name]
                real_extra[f"ratio_to_{ours}"] = round(real.median / medians[ours], 3)
                real_extra["bytes_per_event_vs_ours"] = round(
                    files[endpoint.name].stat().st_size / files[ours].stat().st_size, 2
                )
                note += (
                    f"; {real_extra[f'ratio_to_{ours}']:.2f} x our own {ours} (the same events "
                    f"in {real_extra['bytes_per_event_vs_ours']:.2f} x the bytes)"
                )
            out.add(f"collector.{endpoint.name}", real, unit, baseline=baseline,
                    note=f"{note}; {GOALS[endpoint.name]}", extra=real_extra)  # fmt: skip
            ctx.log(
                f"{endpoint.name}: collector {real.median:,.0f} vs bare {bare.median:,.0f}, "
                f"bare that produces {produced.median:,.0f} {unit}"
            )
    finally:
        for server in servers.values():
            server.stop()
