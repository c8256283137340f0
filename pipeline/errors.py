"""Failures a person can act on: what every command prints, in one line, instead of a traceback.

``one_line(exc, settings)`` turns the failures a newcomer meets (broker unreachable, a port in
use, a data folder another process holds, ClickHouse refusing) into one sentence that says what
to do; ``MA_LOG_LEVEL=debug`` shows the traceback instead. ``check_port`` and ``DataFolderLock``
find the port and folder problems before a service starts, where they can still be reported
plainly (inside Faust's worker they became three tracebacks and exit status 0).

Example::

    check_port("127.0.0.1", 6066, "MA_WORKER_WEB_PORT")   # raises PortInUse
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from aiokafka.errors import KafkaConnectionError

from pipeline.settings import Settings


class StartError(Exception):
    """A service cannot start; the message says why and what to do."""


class PortInUse(StartError):
    pass


class ServiceCrashed(StartError):
    """A service that had started stopped on a failure (its log has the traceback)."""


class FolderInUse(StartError):
    pass


def validation_message(error: Mapping[str, Any]) -> str:
    """One pydantic error's message as a person reads it: without the ``Value error, `` that
    pydantic puts before the message of a validator of ours."""
    return str(error["msg"]).removeprefix("Value error, ")


def check_port(host: str, port: int, variable: str) -> None:
    """Raise ``PortInUse`` when ``host:port`` cannot be bound (another process listens)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                f"port {host}:{port} is in use by another process: stop it, or set {variable}"
            ) from None


class DataFolderLock:
    """An exclusive lock on a data folder for the life of the process (``flock``): a second
    ``ma-pipeline run`` or ``worker`` in the same folder is refused plainly, before chDB or
    RocksDB refuse it in their own words."""

    def __init__(self, folder: Path, owner: str) -> None:
        self.path = folder / ".lock"
        self.owner = owner
        self._file: IO[str] | None = None

    def acquire(self) -> DataFolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another ma-pipeline process"
            handle.close()
            raise FolderInUse(
                f"the data folder {self.path.parent} is in use by {holder}: stop it, or give "
                "this one its own MA_DATA_DIR (and MA_CLICKHOUSE_URL)"
            ) from None
        handle.truncate(0)
        handle.write(f"{self.owner} (pid {os.getpid()})\n")
        handle.flush()
        self._file = handle
        return self


def one_line(exc: BaseException, settings: Settings | None) -> str | None:
    """The sentence for a failure a person can act on, or None for one we did not foresee."""
    if isinstance(exc, StartError):
        return str(exc)
    if isinstance(exc, KafkaConnectionError):
        where = settings.bootstrap if settings is not None else "MA_KAFKA_BOOTSTRAP"
        return (
            f"cannot reach the Kafka broker at {where}: start it (`ma-pipeline broker start`, "
            "or `ma-pipeline run`), or set MA_KAFKA_BOOTSTRAP"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"an address is in use ({exc.strerror}): stop what uses it, or change the port"
    text = str(exc)
    if "Cannot lock file" in text or "Error initializing EmbeddedServer" in text:
        return (
            "the embedded ClickHouse folder is in use by another process (chDB allows one "
            "process per folder): stop it, or set MA_CLICKHOUSE_URL"
        )
    return None
