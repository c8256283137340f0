"""The one ClickHouse client factory: embedded chDB (``chdb://``) and servers (``http(s)://``)
go through the same clickhouse-connect code path.

chDB allows one engine path per process, and one process per path; its calls are synchronous.
``ClickHouse`` therefore runs every call on a single dedicated thread (``run``), keeping the event
loop free and serialising access to the engine.

Example::

    ch = connect(settings)
    rows = await ch.run(lambda c: c.query("SELECT count() FROM ma.events").result_rows)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.settings import Settings

T = TypeVar("T")


def _chdb_dsn(url: str) -> str:
    """``chdb://./data/x`` (relative) or ``chdb:///abs/x`` → ``chdb:///abs/x``, folder created."""
    raw = url.removeprefix("chdb://")
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    path.mkdir(parents=True, exist_ok=True)
    return f"chdb://{path.resolve()}"


def describe_url(url: str) -> str:
    """The URL with any password masked, for logs and status output."""
    if url.startswith("chdb://"):
        return url
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def open_client(url: str, **kwargs: Any) -> Client:
    """A synchronous clickhouse-connect client for ``url`` (blocking; prefer ``connect``)."""
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=_chdb_dsn(url), **kwargs)
    if url.startswith(("http://", "https://", "clickhouse://", "clickhouses://")):
        return clickhouse_connect.get_client(dsn=url, **kwargs)
    raise ValueError(
        f"MA_CLICKHOUSE_URL {describe_url(url)!r}: expected chdb:///path or http(s)://host:8123"
    )


class ClickHouse:
    """A ClickHouse connection used from asyncio: every call runs on one dedicated thread."""

    def __init__(self, url: str, database: str) -> None:
        if not database.replace("_", "").isalnum() or database[0].isdigit():
            raise ValueError(f"invalid ClickHouse database name {database!r}")
        self.url = url
        self.database = database
        self.embedded = url.startswith("chdb://")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Client | None = None

    def _get(self) -> Client:
        if self._client is None:
            # The database is the default for unqualified names (raw SQL segments, analysts'
            # queries); it is created first so that the client may select it.
            bootstrap = open_client(self.url)
            try:
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            finally:
                if not self.embedded:
                    bootstrap.close()
            self._client = open_client(self.url, database=self.database)
        return self._client

    def call(self, fn: Callable[[Client], T]) -> T:
        """Run ``fn(client)`` on the ClickHouse thread and wait (for synchronous callers)."""
        return self._executor.submit(lambda: fn(self._get())).result()

    async def run(self, fn: Callable[[Client], T]) -> T:
        """Run ``fn(client)`` on the ClickHouse thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._get()))

    async def read(self, fn: Callable[[Client], T]) -> T:
        """Run a read-only query ``fn(client)`` as ``run`` does; after a failure the connection
        is dropped (the next call reconnects). chDB keeps a refused query's settings
        (``readonly``) in its session: without this one refused statement made every later
        query and every insert of the sink fail with READONLY."""

        def isolated() -> T:
            try:
                return fn(self._get())
            except Exception:
                self._drop()
                raise

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, isolated)

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # the connection may be broken already
                self._client.close()
            self._client = None

    def close(self) -> None:
        def _close() -> None:
            if self._client is not None:
                self._client.close()
                self._client = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    def reset(self) -> None:
        """Drop the connection so the next call reconnects (after a server went away)."""

        self._executor.submit(self._drop).result()


def connect(settings: Settings) -> ClickHouse:
    """The ClickHouse of these settings (``MA_CLICKHOUSE_URL``, ``MA_CLICKHOUSE_DATABASE``)."""
    return ClickHouse(settings.clickhouse_url, settings.clickhouse_database)


def chdb_path(url: str) -> str | None:
    """The absolute engine path of a ``chdb://`` URL, else ``None``."""
    if not url.startswith("chdb://"):
        return None
    return os.path.abspath(os.path.expanduser(url.removeprefix("chdb://")))
