"""The ``ma-pipeline`` command line (CONTRACT §7)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from pipeline.broker import BrokerError, LocalBroker
from pipeline.clickhouse import connect, describe_url
from pipeline.clickhouse.migrate import migrate as apply_migrations
from pipeline.logs import configure
from pipeline.settings import Settings
from pipeline.topics import ensure_topics


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@click.group()
@click.version_option(package_name="ma-pipeline")
@click.pass_context
def main(ctx: click.Context) -> None:
    """ma-pipeline: marketing-automation event pipeline (collector, worker, ClickHouse)."""
    try:
        ctx.obj = Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable
        raise click.ClickException(f"invalid MA_* environment: {exc}") from exc
    configure(ctx.obj.log_level)


# -- broker ----------------------------------------------------------------------------------
@main.group()
def broker() -> None:
    """The local single-node Kafka broker (KRaft, loopback)."""


@broker.command("start")
@click.pass_context
def broker_start(ctx: click.Context) -> None:
    """Fetch Kafka (first time), format storage (first time) and start the broker."""
    local = LocalBroker(_settings(ctx))
    try:
        if not local.fetched():
            click.echo(f"fetching Apache Kafka {local.version} from Maven Central …")
        status = local.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"broker {status.describe()}")


@broker.command("stop")
@click.pass_context
def broker_stop(ctx: click.Context) -> None:
    """Stop the local broker cleanly."""
    stopped = LocalBroker(_settings(ctx)).stop()
    click.echo("broker stopped" if stopped else "broker was not running")


@broker.command("status")
@click.pass_context
def broker_status(ctx: click.Context) -> None:
    """Say whether the local broker runs and answers metadata requests (exit 1 if not ready)."""
    status = LocalBroker(_settings(ctx)).status()
    click.echo(f"broker {status.describe()}")
    sys.exit(0 if status.ready else 1)


# -- schema and topics --------------------------------------------------------------------------
@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the ClickHouse DDL in schemas/clickhouse (idempotent)."""
    settings = _settings(ctx)
    clickhouse = connect(settings)
    try:
        applied = clickhouse.call(lambda c: apply_migrations(c, settings.clickhouse_database))
    except Exception as exc:
        raise click.ClickException(
            f"migrating {describe_url(settings.clickhouse_url)} failed: {exc}"
        ) from exc
    finally:
        clickhouse.close()
    where = describe_url(settings.clickhouse_url)
    if applied:
        click.echo(f"applied to {where}: {', '.join(applied)}")
    else:
        click.echo(f"{where}: schema up to date")


@main.command()
@click.pass_context
def topics(ctx: click.Context) -> None:
    """Create the pipeline's Kafka topics that do not exist yet (idempotent)."""
    settings = _settings(ctx)
    created = _run(ensure_topics(settings))
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


# -- services ----------------------------------------------------------------------------------
@main.command()
@click.pass_context
def collector(ctx: click.Context) -> None:
    """Run the HTTP collector (MA_HTTP_HOST:MA_HTTP_PORT)."""
    from pipeline.collect.server import serve

    settings = _settings(ctx)
    _run(ensure_topics(settings))
    _run(serve(settings))


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Everything on this machine: local broker, worker, collector, embedded ClickHouse."""
    from pipeline.run import run_all

    try:
        run_all(_settings(ctx))
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the Faust worker: stitching, scoring, triggers (and the ClickHouse sink)."""
    from pipeline.worker.main import run_worker

    run_worker(_settings(ctx))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


if __name__ == "__main__":
    main()
