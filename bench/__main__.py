"""``python -m bench [--only SECTION ...] [--quick]``: run the benchmark sections, write
``bench/results.json`` and print a table.

Kafka: ``MA_KAFKA_BOOTSTRAP`` if set, else a local broker started for this run (temporary data
directory, free ports, jars from ``.cache``) and stopped at the end. ClickHouse: a temporary
``chdb://`` path shared by all sections (one engine path per process), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from rich.console import Console

from bench import SECTIONS, BenchContext, BenchSection, progress
from bench.report import REPO, CpuMeter, Results, cpu_busy, machine_info
from pipeline.settings import Settings

#: Modules whose ``@section`` functions register themselves, in run order: baselines first,
#: since later sections state their figures as ratios to them. Add new modules here.
SECTION_MODULES = (
    "bench.baselines",
    "bench.collector",
    "bench.worker",
    "bench.sink",
    "bench.segments",
    "bench.latency",
)

DEFAULT_OUTPUT = REPO / "bench" / "results.json"


def main(argv: list[str] | None = None) -> int:
    for module in SECTION_MODULES:
        importlib.import_module(module)
    names = [s.name for s in SECTIONS]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="ma-pipeline throughput benchmarks (bench/README.md)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=names,
        metavar="SECTION",
        help=f"run these sections (and what they require); one of: {', '.join(names)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, ~10 s")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON file")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(argv)

    # piped output (make bench | tee) would otherwise wrap at 80 columns
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.list:
        for s in SECTIONS:
            console.print(f"[bold]{s.name}[/]  {s.description}")
        return 0
    selected = _with_requirements(args.only or names)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A fresh broker makes aiokafka log retries (partitions without a leader yet, the offsets
    # topic being created for the first group); warm-ups absorb them, real failures raise.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    machine = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="ma-bench-"))
    broker = None
    bootstrap = os.environ.get("MA_KAFKA_BOOTSTRAP")
    try:
        if not bootstrap:
            from pipeline.broker import LocalBroker

            broker = LocalBroker(
                Settings(
                    data_dir=scratch / "broker",
                    broker_port=_free_port(),
                    broker_controller_port=_free_port(),
                    cache_dir=REPO / ".cache",
                )
            )
            progress(f"starting a local Kafka {broker.version} broker …")
            bootstrap = broker.start().bootstrap
            machine["kafka_version"] = broker.version
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=bootstrap,
            topic_prefix=f"bench-{run_id}.",
            topic_partitions=8,
            app_id=f"bench-{run_id}",
            clickhouse_url=f"chdb://{scratch / 'chdb'}",
            data_dir=scratch / "data",
            cache_dir=REPO / ".cache",
            store="memory://",
        )
        options = {
            "quick": args.quick,
            "sections": [s.name for s in selected],
            "broker": "local" if broker else "MA_KAFKA_BOOTSTRAP",
        }
        results = Results(machine, options)
        ctx = BenchContext(settings, args.quick, scratch, results)
        if broker is not None and (pid := broker.pid()) is not None:
            ctx.pids.append(pid)
        asyncio.run(_run_sections(ctx, selected))
        if broker is None and ctx.created_topics:
            asyncio.run(_delete_topics(bootstrap, ctx.created_topics))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    results.machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    results.machine["cpu_busy_end"] = cpu_busy()
    results.write(args.output)
    results.print(console)
    console.print(f"written to {args.output}")
    return 1 if any(s.error for s in results.sections.values()) else 0


def _with_requirements(wanted: list[str]) -> list[BenchSection]:
    """The wanted sections plus those they require, in registration order."""
    by_name = {s.name: s for s in SECTIONS}
    needed: set[str] = set()

    def add(name: str) -> None:
        if name not in needed:
            needed.add(name)
            for required in by_name[name].requires:
                add(required)

    for name in wanted:
        add(name)
    return [s for s in SECTIONS if s.name in needed]


async def _run_sections(ctx: BenchContext, sections: list[BenchSection]) -> None:
    for bench in sections:
        out = ctx.results.section(bench.name)
        progress(f"[bold]{bench.name}[/]")
        started = time.perf_counter()
        meter = CpuMeter(lambda: ctx.pids)
        meter.start()
        try:
            result = bench.run(ctx, out)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # one failing section must not hide the others' figures
            out.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        out.seconds = round(time.perf_counter() - started, 1)
        out.others_cpu = meter.stop()
        out.steal = meter.steal
        others = "?" if out.others_cpu is None else f"{out.others_cpu:.0%}"
        steal = "?" if out.steal is None else f"{out.steal:.1%}"
        progress(
            f"{bench.name} done in {out.seconds:.1f} s "
            f"(other processes: {others} CPU; hypervisor steal: {steal})"
        )


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
