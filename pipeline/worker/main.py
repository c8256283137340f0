"""Running the worker: ``ma-pipeline worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faust.worker import Worker as FaustWorker

from pipeline.rules import RulesWatcher
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from pipeline.worker.app import Worker

log = logging.getLogger(__name__)
READY = "worker ready"


class _FaustWorker(FaustWorker):
    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        log.info("%s: partitions assigned, tables recovered, agents running", READY)


def prepare(settings: Settings) -> Worker:
    """Create the topics and the ClickHouse schema, and build the worker."""
    asyncio.run(ensure_topics(settings))
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    worker = Worker(settings, RulesWatcher(settings.config))
    applied = worker.migrate()
    if applied:
        log.info("ClickHouse schema applied: %s", ", ".join(applied))
    return worker


def execute(worker: Worker) -> None:
    """Run the Faust worker until SIGINT/SIGTERM."""
    settings = worker.settings
    with contextlib.suppress(SystemExit):
        _FaustWorker(
            worker.app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False
        ).execute_from_commandline()


def run_worker(settings: Settings) -> None:
    """``ma-pipeline worker``."""
    execute(prepare(settings))
