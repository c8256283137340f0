"""Running the worker: ``ma-pipeline worker``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable

from faust.worker import Worker as FaustWorker

from pipeline.errors import DataFolderLock, ServiceCrashed, check_port
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from pipeline.worker.app import Worker

log = logging.getLogger(__name__)
READY = "worker ready"


class _StartupNoise(logging.Filter):
    """Drops aiokafka's errors that are expected while the worker starts on a new broker: Faust
    creates its changelog topics (metadata lags behind) and the group coordinator is elected.
    Once the worker is ready, the same messages mean something and pass."""

    EXPECTED = (
        "Topic %s not found in cluster metadata",
        "Group Coordinator Request failed: %s",
        "Marking the coordinator dead (node %s)for group %s.",
    )
    LOGGERS = ("aiokafka.cluster", "aiokafka.consumer.group_coordinator")

    def __init__(self) -> None:
        super().__init__()
        self.starting = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.starting and record.msg in self.EXPECTED)


_STARTUP_NOISE = _StartupNoise()


class _FaustWorker(FaustWorker):
    on_ready: Callable[[], Awaitable[None]] | None = None
    #: what must be up before "worker ready" (the worker's API)
    ready_when: Callable[[], Awaitable[None]] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self.ready_when is not None:
            await self.ready_when()
        _STARTUP_NOISE.starting = False
        _quieter_gc()
        log.info("%s: partitions assigned, tables recovered, agents running", READY)
        if self.on_ready is not None:
            await self.on_ready()


#: collections of the youngest generation: after this many allocations (Python's default 700)
GC_THRESHOLD = (20_000, 20, 20)


def _quieter_gc() -> None:
    """Fewer, cheaper cyclic garbage collections once the worker runs.

    The worker allocates many short-lived dicts per event (decoded messages, state, outputs),
    and next to none of them form cycles; with Python's default thresholds the collector ran
    every 700 allocations and took ~10% of the worker's samples in a profile of a backlog
    (``gc_collect_main``). Everything alive at start-up (Faust, the rules, modules) is frozen
    out of the collections, and the youngest generation is collected less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def prepare(
    settings: Settings, owner: str = "ma-pipeline worker", lock: DataFolderLock | None = None
) -> Worker:
    """Check what the worker needs is free, create the topics and the ClickHouse schema, and
    build the worker (``lock``: its data folder's, if the caller holds it already). (Each
    failure raises one sentence: ``pipeline.errors``.)"""
    check_port(settings.worker_web_host, settings.worker_web_port, "MA_WORKER_WEB_PORT")
    lock = lock or DataFolderLock(settings.data_dir / "worker", owner).acquire()
    asyncio.run(ensure_topics(settings))
    worker = Worker(settings, RulesWatcher(settings.config))
    worker.folder_lock = lock  # held while the process lives
    applied = worker.migrate()
    if applied:
        log.info("ClickHouse schema applied: %s", ", ".join(applied))
    return worker


def execute(worker: Worker, on_ready: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run the Faust worker until SIGINT/SIGTERM; ``on_ready`` once it is ready."""
    settings = worker.settings
    for name in _StartupNoise.LOGGERS:
        logging.getLogger(name).addFilter(_STARTUP_NOISE)
    faust_worker = _FaustWorker(
        worker.app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False
    )
    faust_worker.on_ready = on_ready
    faust_worker.ready_when = worker.api_ready
    with contextlib.suppress(SystemExit):  # mode exits 0 even when a service crashed
        faust_worker.execute_from_commandline()
    crashed = next((s for s in (worker.app, faust_worker) if s.crashed), None)
    if crashed is not None:
        raise ServiceCrashed(
            f"the worker stopped after a failure: {crashed.crash_reason!r} (the log above "
            "says where; restart it: it resumes from its last committed batch)"
        )


def run_worker(settings: Settings) -> None:
    """``ma-pipeline worker``."""
    execute(prepare(settings))
