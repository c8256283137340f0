"""``ma-pipeline run``: the whole pipeline on one machine, in one command.

Starts the local Kafka broker (unless ``MA_KAFKA_BOOTSTRAP`` names one), creates the topics and
the ClickHouse schema, then runs the worker, the collector and webhook delivery in one process
(one event loop), with embedded ClickHouse. Ctrl-C stops them cleanly, and the broker if this
command started it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from pipeline.broker import LocalBroker
from pipeline.clickhouse import describe_url
from pipeline.collect.server import serve
from pipeline.deliver.loop import Deliverer
from pipeline.errors import DataFolderLock, check_port
from pipeline.settings import Settings
from pipeline.worker.main import execute, prepare

log = logging.getLogger(__name__)
#: the line ``run`` prints once everything listens
READY_LINE = "ready:"


def run_all(settings: Settings) -> None:
    # First the data folder: a second `run` here is told that, not that a port is taken
    lock = DataFolderLock(settings.data_dir / "worker", "ma-pipeline run").acquire()
    broker = LocalBroker(settings) if settings.uses_local_broker else None
    started_broker = False
    if broker is not None:
        if broker.pid() is None:
            if not broker.fetched():
                _say(f"fetching Apache Kafka {broker.version} from Maven Central (first run) …")
            broker.start()
            started_broker = True
        _say(f"broker     {broker.bootstrap} (local KRaft, data in {broker.home})")
    else:
        _say(f"broker     {settings.bootstrap}")
    try:
        check_port(settings.http_host, settings.http_port, "MA_HTTP_PORT")
        worker = prepare(settings, lock=lock)

        listening = asyncio.Event()  # bound to the worker's loop when first awaited

        async def collector() -> None:
            await serve(settings, handle_signals=False, listening=listening)

        worker.app.task(collector)

        async def deliver() -> None:  # webhook destinations of the rules file
            await Deliverer(settings, worker.rules, worker.clock, worker.metrics.registry).run()

        worker.app.task(deliver)
        database = settings.clickhouse_database
        _say(f"ClickHouse {describe_url(settings.clickhouse_url)}, database {database}")
        _say(f"rules      {settings.config} (reloaded on change)")
        _say("starting the worker and the collector …")

        async def ready() -> None:  # once the worker is ready and the collector listens
            await listening.wait()
            url = f"http://{settings.http_host}:{settings.http_port}"
            _say(f"collector  {url}  (try /t.js, /healthz)")
            _say(f"worker API {settings.worker_api}  (ma-pipeline query, segments)")
            _say(f"{READY_LINE} Ctrl-C stops everything.")

        execute(worker, on_ready=ready)
    finally:
        if broker is not None and started_broker:
            _say("stopping the local broker …")
            broker.stop()
        _say("stopped.")


def _say(text: str) -> None:
    sys.stderr.write(f"ma-pipeline: {text}\n")
    sys.stderr.flush()
