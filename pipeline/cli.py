"""The ``ma-pipeline`` command line (CONTRACT §7)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, cast

import click
from pydantic import ValidationError

from pipeline.broker import BrokerError, LocalBroker
from pipeline.clickhouse import connect, describe_url
from pipeline.clickhouse.migrate import migrate as apply_migrations
from pipeline.errors import validation_message
from pipeline.kafka import BrokerUnavailable
from pipeline.logs import configure
from pipeline.settings import Settings
from pipeline.topics import ensure_topics


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


class _Commands(click.Group):
    """Every command fails with one line a person can act on and exit status 1 (CONTRACT §7):
    the failures ``pipeline.errors.one_line`` knows, and any other as its type and message;
    ``MA_LOG_LEVEL=debug`` shows the traceback instead."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            from pipeline.errors import one_line

            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            if settings is not None and settings.log_level == "debug":
                raise
            line = one_line(exc, settings)
            if line is None:
                text = str(exc).strip().splitlines()
                line = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
                line += " (MA_LOG_LEVEL=debug shows where)"
            raise click.ClickException(line) from None


@click.group(cls=_Commands)
@click.version_option(package_name="ma-pipeline")
@click.pass_context
def main(ctx: click.Context) -> None:
    """ma-pipeline: marketing-automation event pipeline (collector, worker, ClickHouse)."""
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        raise click.ClickException(_environment_problems(exc)) from None
    configure(ctx.obj.log_level)


def _environment_problems(exc: ValidationError) -> str:
    """One line naming each refused ``MA_*`` variable and what is wrong with it (not its value:
    it may be a secret)."""
    problems = []
    for error in exc.errors():
        name = "MA_" + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{name}: {validation_message(error)}")
    return "invalid MA_* environment: " + "; ".join(problems)


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
        from pipeline.errors import one_line

        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        reason = one_line(exc, settings) or lines[0][:300]
        raise click.ClickException(
            f"migrating {describe_url(settings.clickhouse_url)} failed: {reason}"
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


@main.command()
@click.pass_context
def lag(ctx: click.Context) -> None:
    """Records the worker has yet to process, per consumer group and input topic."""
    from pipeline.lag import consumer_lag

    settings = _settings(ctx)
    try:
        lags = _run(consumer_lag(settings))
    except Exception as exc:
        raise click.ClickException(f"reading lag from {settings.bootstrap} failed: {exc}") from exc
    rows = [(group, topic, n) for group, topics in lags.items() for topic, n in topics.items()]
    width = [max(len(str(row[i])) for row in [("group", "topic", 0), *rows]) for i in (0, 1)]
    click.echo(f"{'group':<{width[0]}}  {'topic':<{width[1]}}  lag")
    for group, topic, n in rows:
        click.echo(f"{group:<{width[0]}}  {topic:<{width[1]}}  {n}")


# -- services ----------------------------------------------------------------------------------
@main.command()
@click.pass_context
def collector(ctx: click.Context) -> None:
    """Run the HTTP collector (MA_HTTP_HOST:MA_HTTP_PORT)."""
    from pipeline.collect.server import serve
    from pipeline.errors import check_port

    settings = _settings(ctx)
    _check_rules(settings.config)
    check_port(settings.http_host, settings.http_port, "MA_HTTP_PORT")
    _run(ensure_topics(settings))
    _run(serve(settings))


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Everything on this machine: local broker, worker, collector, embedded ClickHouse."""
    from pipeline.run import run_all

    settings = _settings(ctx)
    _check_rules(settings.config)
    try:
        run_all(settings)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the Faust worker: stitching, scoring, triggers (and the ClickHouse sink)."""
    from pipeline.worker.main import run_worker

    settings = _settings(ctx)
    _check_rules(settings.config)
    run_worker(settings)


def _check_rules(path: Path) -> None:
    """A service refuses to start on a rules file it cannot use: one line, exit 1."""
    from pipeline.rules import RulesError, load_rules

    try:
        load_rules(path)
    except RulesError as exc:
        more = len(exc.problems) - 1
        hint = f" (and {more} more: ma-pipeline rules check {path})" if more else ""
        raise click.ClickException(f"{exc.problems[0]}{hint}") from None


@main.command()
@click.pass_context
def deliver(ctx: click.Context) -> None:
    """Deliver triggers to the rules file's webhook destinations (signed, retried)."""
    from pipeline.deliver.main import run_deliver

    settings = _settings(ctx)
    _check_rules(settings.config)
    run_deliver(settings)


# -- reading topics ---------------------------------------------------------------------------
@main.command("tail")
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Every record there is, then new ones.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many records.")
@click.pass_context
def tail(ctx: click.Context, topic: str, from_beginning: bool, limit: int | None) -> None:
    """Decoded records of TOPIC (e.g. events, triggers), one JSON per line, from now on."""
    import orjson

    def line(value: Any) -> str:
        return orjson.dumps(value, default=str).decode()

    _follow(ctx, topic, from_beginning, limit, line, lambda value: True)


@main.group()
def triggers() -> None:
    """Triggers as they fire (ma.triggers)."""


@triggers.command("tail")
@click.option("--rule", "rules_", multiple=True, help="Only this rule (repeatable).")
@click.option("--from-beginning", is_flag=True, help="Every trigger there is, then new ones.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many triggers.")
@click.pass_context
def triggers_tail(
    ctx: click.Context, rules_: tuple[str, ...], from_beginning: bool, limit: int | None
) -> None:
    """One line per trigger: fired_at, rule, channel, subject (email or anonymous_id), id."""
    from pipeline.tail import trigger_line

    def wanted(value: Any) -> bool:
        return isinstance(value, dict) and (not rules_ or value.get("rule") in rules_)

    _follow(ctx, "triggers", from_beginning, limit, trigger_line, wanted)


@triggers.command("pending")
@click.argument("email", required=False)
@click.pass_context
def triggers_pending(ctx: click.Context, email: str | None) -> None:
    """What waits: delayed triggers (of EMAIL's contact, or all), due when, cancelled by what."""
    import aiohttp

    from pipeline import codec

    settings = _settings(ctx)

    async def fetch() -> Any:
        timeout = aiohttp.ClientTimeout(total=60, connect=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            params = {"email": email} if email else {}
            url = f"{settings.worker_api}/triggers/pending"
            async with http.get(url, params=params) as response:
                if response.status != 200:
                    raise click.ClickException(f"the worker API answered {response.status}")
                return codec.loads(await response.read())["pending"]

    try:
        pending = _run(fetch())
    except (aiohttp.ClientConnectionError, TimeoutError):
        raise click.ClickException(
            f"the worker API at {settings.worker_api} did not answer: is the worker running?"
        ) from None
    if not pending:
        click.echo("nothing waits" + (f" for {email}" if email else ""))
        return
    for p in pending:
        cancel = "; ".join(p["cancelled_by"]) or "-"
        click.echo(
            f"{p['due_at']}  {p['rule']}  {p['channel'] or '-'}  {p['subject']}  "
            f"{p['trigger_id']}  cancelled by: {cancel}"
        )


def _follow(
    ctx: click.Context,
    topic: str,
    from_beginning: bool,
    limit: int | None,
    line: Any,
    wanted: Any,
) -> None:
    from pipeline.tail import UnknownTopic, follow

    settings = _settings(ctx)

    def ready(name: str) -> None:
        since = "from the beginning" if from_beginning else "from now"
        click.echo(f"following {name} {since} (Ctrl-C stops)", err=True)

    async def printing() -> None:
        shown = 0
        stream = follow(settings, topic, from_beginning=from_beginning, on_ready=ready)
        async for value in stream:
            if not wanted(value):
                continue
            click.echo(line(value))
            sys.stdout.flush()
            shown += 1
            if limit is not None and shown >= limit:
                return

    try:
        _run(printing())
    except UnknownTopic as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        return  # Ctrl-C is how a tail stops


# -- rules ----------------------------------------------------------------------------------
@main.group()
def rules() -> None:
    """The rules file (MA_CONFIG)."""


@rules.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def rules_check(ctx: click.Context, file: Path | None) -> None:
    """Validate a rules file as the worker would (default: MA_CONFIG); exit 1 on errors."""
    from pipeline.rules import RulesError, load_rules

    path = file or _settings(ctx).config
    try:
        loaded = load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        ctx.exit(1)
    counts = {
        "site": len(loaded.sites),
        "scoring rule": len(loaded.scoring.rules),
        "trigger": len(loaded.triggers.rules),
        "segment": len(loaded.segments),
    }
    listed = ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for what, n in counts.items())
    click.echo(f"{path}: ok ({listed})")
    for line in loaded.keyring.disabled:
        click.echo(f"{path}: warning: {line}", err=True)


# -- keys --------------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Keys for backends and operators (the rules file's keys:)."""


@keys.command("new")
@click.option("--id", "key_id", default="my-key", show_default=True, help="the key's id")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="ingest:<site>, contacts:write, segments:read, profiles:read or console (repeatable)",
)
def keys_new(key_id: str, scopes: tuple[str, ...]) -> None:
    """Make a random secret; print it once, and the entry for the rules file (its hash only)."""
    from pydantic import ValidationError

    from pipeline.rules.keys import new_secret
    from pipeline.rules.models import ApiKey

    secret, digest = new_secret()
    try:
        ApiKey(id=key_id, sha256=digest, scopes=list(scopes))
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise click.ClickException(f"{where}: {validation_message(problem)}") from None
    click.echo(f"secret (shown once; give it to the caller): {secret}")
    click.echo("add to the rules file under keys:")
    click.echo(f"  - id: {key_id}")
    click.echo(f"    sha256: {digest}")
    click.echo(f"    scopes: [{', '.join(scopes)}]")


@main.command()
@click.pass_context
def sink(ctx: click.Context) -> None:
    """Run the ClickHouse sink as a process of its own (workers with MA_SINK=false)."""
    from pipeline.sink.main import run_sink

    run_sink(_settings(ctx))


# -- analysts ---------------------------------------------------------------------------------
def _parse_params(params: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        parsed[name] = value
    return parsed


def _print_rows(columns: list[str], rows: list[list[Any]], fmt: str, out: Any) -> None:
    import csv

    from pipeline import codec

    if fmt == "json":
        for row in rows:
            out.write(codec.dumps(dict(zip(columns, row, strict=True))).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [codec.dumps(v).decode() if isinstance(v, dict | list) else v for v in row]
            )
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns)
        for row in rows:
            table.add_row(*(str(v) for v in row))
        # As wide as the values: never an id cut to "3b2c7f9e-1c1a-…" at 80 columns (a
        # narrower terminal wraps the lines instead)
        width = Console(file=out, width=100_000).measure(table).maximum
        Console(file=out, width=max(width, 20)).print(table)


@main.command()
@click.argument("sql")
@click.option("--param", "params", multiple=True, help="a query parameter NAME=VALUE ({NAME:Type})")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def query(ctx: click.Context, sql: str, params: tuple[str, ...], fmt: str) -> None:
    """Run a read-only SQL query against the analyst tables (database MA_CLICKHOUSE_DATABASE)."""
    from pipeline.warehouse import QueryError, run_query

    try:
        columns, rows = _run(run_query(_settings(ctx), sql, _parse_params(params)))
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_rows(columns, rows, fmt, sys.stdout)


@main.group()
def segments() -> None:
    """Lists of contacts defined in the rules file (MA_CONFIG)."""


def _segment(ctx: click.Context, name: str) -> Any:
    from pipeline.rules import RulesError, load_rules
    from pipeline.segments import compile_segment

    settings = _settings(ctx)
    try:
        rules = load_rules(settings.config)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from exc
    segment = rules.segment(name)
    if segment is None:
        known = ", ".join(s.name for s in rules.segments) or "none"
        raise click.ClickException(f"no segment {name!r} in {settings.config} (known: {known})")
    return compile_segment(segment, settings.clickhouse_database,
                           half_life=rules.scoring.half_life)  # fmt: skip


@segments.command("list")
@click.pass_context
def segments_list(ctx: click.Context) -> None:
    """Name and description of every segment."""
    from pipeline.rules import RulesError, load_rules

    try:
        rules = load_rules(_settings(ctx).config)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from exc
    for segment in rules.segments:
        kind = "sql" if segment.sql else "rules"
        click.echo(f"{segment.name}\t{kind}\t{segment.description or ''}")


@segments.command("count")
@click.argument("name")
@click.pass_context
def segments_count(ctx: click.Context, name: str) -> None:
    """How many contacts are in a segment now."""
    from pipeline.warehouse import QueryError, run_query

    compiled = _segment(ctx, name)
    try:
        _, rows = _run(run_query(_settings(ctx), compiled.count_sql(), compiled.parameters))
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(rows[0][0])


@segments.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="file (default stdout)")
@click.pass_context
def segments_export(ctx: click.Context, name: str, fmt: str, out: str | None) -> None:
    """The contacts of a segment with their attributes, score and stage."""
    from pipeline.segments import EXPORT_COLUMNS
    from pipeline.warehouse import QueryError, run_query

    settings = _settings(ctx)
    compiled = _segment(ctx, name)
    try:
        columns, rows = _run(
            run_query(
                settings, compiled.export_sql(settings.clickhouse_database), compiled.parameters
            )
        )
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    columns = columns or list(EXPORT_COLUMNS)  # chDB names no columns for an empty result
    if out:
        with open(out, "w", encoding="utf-8", newline="") as handle:
            _print_rows(columns, rows, fmt, handle)
        click.echo(f"{len(rows)} contacts written to {out}", err=True)
    else:
        _print_rows(columns, rows, fmt, sys.stdout)


# -- contacts ---------------------------------------------------------------------------------
@main.group()
def contacts() -> None:
    """Contact data: imports."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="the source name the merge rules rank, e.g. import")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="rename a column (COLUMN= drops it); repeatable",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write every problem (line: message) to this file",
)
@click.pass_context
def contacts_import(
    ctx: click.Context, file: Path, source: str, maps: tuple[str, ...], report: Path | None
) -> None:
    """Stream FILE.csv onto ma.contact-updates (bad rows reported by line and skipped)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TransferSpeedColumn

    from pipeline.contacts.importer import import_csv, parse_mapping

    try:
        mapping = parse_mapping(maps)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--map") from exc
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "[progress.percentage]{task.percentage:>3.0f}%",
        TransferSpeedColumn(),
        transient=True,
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),  # not a terminal: no bar (it left a blank line)
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=file.stat().st_size)
        try:
            result = _run(
                import_csv(
                    _settings(ctx),
                    file,
                    source=source,
                    mapping=mapping,
                    on_progress=lambda done: progress.update(task, completed=done),
                )
            )
        except (ValueError, BrokerUnavailable) as exc:
            raise click.ClickException(str(exc)) from exc
    for problem in result.problems[:20]:
        click.echo(f"skipped {problem}", err=True)
    if len(result.problems) > 20:
        click.echo(f"… and {result.skipped - 20} more skipped rows", err=True)
    if report is not None:
        report.write_text("".join(f"{p}\n" for p in result.problems))
    click.echo(f"{result.rows} rows: {result.imported} imported, {result.skipped} skipped")


@main.command()
@click.argument("email")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="wait until ClickHouse confirms the erasure",
)
@click.option("--timeout", default=120.0, show_default=True, help="seconds to wait")
@click.pass_context
def forget(ctx: click.Context, email: str, wait: bool, timeout: float) -> None:
    """Erase a person everywhere: worker state, compacted topics, ClickHouse."""
    import uuid

    from pipeline import contact_id_for
    from pipeline.identity import normalize_email
    from pipeline.kafka import JsonProducer
    from pipeline.warehouse import QueryError, run_query

    settings = _settings(ctx)
    contact_id = str(contact_id_for(normalize_email(email)))
    erasure_id = str(uuid.uuid4())

    async def request() -> None:
        producer = JsonProducer(settings, client_id="ma-forget")
        await producer.start(give_up_after=10)
        try:
            await producer.send_json(
                settings.topic("contact-updates"),
                contact_id,
                {
                    "contact_id": contact_id,
                    "op": "forget",
                    "source": "forget",
                    "received_at": settings.clock().now(),
                    "erasure_id": erasure_id,
                },
            )
        finally:
            await producer.stop()

    async def confirmed() -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, rows = await run_query(
                    settings,
                    f"SELECT rows_deleted FROM {settings.clickhouse_database}.erasures "
                    "WHERE erasure_id = {e:String}",
                    {"e": erasure_id},
                )
            except QueryError:
                rows = []
            if rows:
                click.echo(f"erased: {rows[0][0]} rows deleted from ClickHouse")
                return True
            await asyncio.sleep(1)
        return False

    try:
        _run(request())
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"erasure {erasure_id} requested (contact {contact_id})")
    if wait and not _run(confirmed()):
        raise click.ClickException(
            f"the erasure was requested but not confirmed within {timeout:.0f}s: is the worker "
            "running? It completes when the worker processes it."
        )


@main.command()
@click.option("--visitors", default=200, show_default=True, help="synthetic visitors to send")
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--crm-key",
    envvar="MA_DEMO_CRM_KEY",
    default=None,
    help="a key with contacts:write for the CRM sync  [default: the example rules' crm-sync]",
)
@click.pass_context
def demo(ctx: click.Context, visitors: int, seed: int, crm_key: str | None) -> None:
    """Send a small company's day (CRM import, a campaign, visitors, a scanner, a kiosk) to the
    running pipeline; print what it made of this run and where to look next."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from pipeline.demo import EXAMPLE_CRM_KEY, run_demo
    from pipeline.rules import RulesError, load_rules

    settings = _settings(ctx)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        transient=True, console=Console(stderr=True),  # the summary alone on stdout
        disable=not sys.stderr.isatty(),  # not a terminal: no bar (it left a blank line)
    ) as progress:  # fmt: skip
        tasks: dict[str, Any] = {}

        def tell(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=max(total, 1))
            progress.update(tasks[step], completed=done, total=max(total, 1))

        try:
            rules = load_rules(settings.config)
            summary = _run(
                run_demo(
                    settings,
                    rules,
                    visitors=visitors,
                    seed=seed,
                    crm_key=crm_key or EXAMPLE_CRM_KEY,
                    progress=tell,
                )
            )
        except (RulesError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(
                f"cannot reach the collector on port {settings.http_port} ({exc}): start the "
                "pipeline first with `make run` (or `ma-pipeline run`)"
            ) from exc
    _print_demo(settings, summary, seed)


def _print_demo(settings: Any, summary: Any, seed: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100)
    rejected = sum(summary.rejected.values())
    console.print(
        f"sent {summary.visitors} visitors: {summary.requests} requests, {summary.events} "
        f"events accepted, {rejected} rejected, {summary.clicks} email clicks, "
        f"{summary.contacts_synced} CRM contacts (seed {seed})",
        soft_wrap=True,
    )
    if not summary.caught_up:
        console.print(
            "[yellow]the pipeline had not stored all of this run's events within a minute: "
            "the figures below are partial (is the worker running?)[/]"
        )
    figures = summary.figures

    def rows(title: str, name: str, columns: tuple[str, ...]) -> None:
        value = figures.get(name)
        if isinstance(value, str):  # unavailable, and why
            console.print(f"{title}: {value}")
            return
        console.print(f"[bold]{title}[/]")
        table = Table(*columns, box=None, pad_edge=False, header_style="dim")
        for row in value or [["(none)", *([""] * (len(columns) - 1))]]:
            table.add_row(*(str(v) for v in row))
        console.print(table)

    console.print()
    console.print(
        f"[bold]This run[/]: {figures.get('cookies seen', 0)} cookies, "
        f"{figures.get('activation rate', 'no activation rate')}",
        soft_wrap=True,
    )
    rows("identified by", "identified by", ("evidence", "cookies"))
    rows("refused as evidence", "refused as evidence", ("reason", "count"))
    rows("contacts by lifecycle stage", "contacts by stage", ("stage", "contacts"))
    rows("triggers fired", "triggers fired", ("rule", "channel", "count"))
    rows(
        "triggers scheduled (delayed: they fire when due)", "triggers scheduled", ("rule", "count")
    )
    rows("triggers skipped", "triggers skipped", ("rule", "reason", "count"))
    top = [row for row in figures.get("segments", []) if row[1]][:5]
    figures["top segments"] = top
    rows("top segments (this run's contacts)", "top segments", ("segment", "members"))
    figures["dead letters"] = [[reason, n] for reason, n in summary.rejected.most_common()]
    rows("dead letters by reason (this run's, refused by the collector)", "dead letters",
         ("reason", "count"))  # fmt: skip
    console.print()
    console.print("[bold]Look at this next[/]")
    console_url = f"http://127.0.0.1:{settings.worker_web_port}/console"
    console.print(f"  the console: {console_url}", soft_wrap=True)
    for story, email in summary.featured.items():
        console.print(f"  {story}: {console_url}/contact?email={email}", soft_wrap=True)
    console.print(
        '  why triggers did not fire: ma-pipeline query "SELECT rule, reason, count() '
        "FROM trigger_decisions WHERE decision = 'skipped' GROUP BY rule, reason ORDER BY 3 "
        'DESC"',
        soft_wrap=True,
    )


# -- links -------------------------------------------------------------------------------------
@main.group()
def links() -> None:
    """Signed per-recipient email links."""


@links.command("sign")
@click.option("--email", help="the recipient's email (the contact id is derived from it)")
@click.option("--contact-id", help="the recipient's contact id (instead of --email)")
@click.option("--url", help="where a click lands (required for click links)")
@click.option("--purpose", type=click.Choice(["click", "open", "unsubscribe"]), default="click")
@click.option("--campaign", help="campaign id")
@click.option(
    "--site", help="site id (default: the rules file's only site); its fallback URL for bad links"
)
@click.option("--link-id", help="which link of the mail (for scanner burst detection)")
@click.option("--ttl", default="90d", show_default=True, help="validity, e.g. 30d")
@click.pass_context
def links_sign(
    ctx: click.Context,
    email: str | None,
    contact_id: str | None,
    url: str | None,
    purpose: str,
    campaign: str | None,
    site: str | None,
    link_id: str | None,
    ttl: str,
) -> None:
    """Print a signed link (sign at send time: the issue time stands for the send time)."""
    from pipeline import contact_id_for
    from pipeline import links as signing
    from pipeline.links import Purpose
    from pipeline.rules import parse_duration

    settings = _settings(ctx)
    if (email is None) == (contact_id is None):
        raise click.UsageError("give exactly one of --email, --contact-id")
    contact = contact_id or str(contact_id_for(email or ""))
    if site is None:  # the rules' only site, else say which there are
        site = _only_site(settings)
    try:
        token = signing.sign(
            contact_id=contact,
            purpose=cast(Purpose, purpose),
            url=url,
            campaign_id=campaign,
            site_id=site,
            link_id=link_id,
            keys=settings.link_keys,
            ttl=parse_duration(ttl),
            now=settings.clock().now(),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(signing.link_url(settings.public_url, token, purpose))  # type: ignore[arg-type]


def _only_site(settings: Any) -> str:
    """The site a link is for when ``--site`` is not given: the rules file's only one (a
    click must count for a site: its rules, fallback URL and metrics)."""
    from pipeline.rules import RulesError, load_rules

    try:
        sites = [site.id for site in load_rules(settings.config).sites]
    except RulesError as exc:
        raise click.ClickException(str(exc)) from exc
    if len(sites) != 1:
        raise click.UsageError(
            f"give --site: the rules file {settings.config} has "
            + (f"the sites {', '.join(sites)}" if sites else "no site")
        )
    return sites[0]


# -- bench -------------------------------------------------------------------------------------
def _bench_checkout() -> Path | None:
    """The source checkout holding ``bench/`` (next to this package, else the working
    directory): the benchmarks are part of the repository, not of the installed wheel."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / "bench" / "__main__.py").is_file():
            return root
    return None


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="Run the benchmarks (in a source checkout only).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks: `python -m bench ARGS`, every argument passed through.

    Only in a source checkout of ma-pipeline: the benchmarks (bench/) are part of the
    repository, not of the installed package. ARGS: --list (the sections), --only SECTION ...,
    --quick (small sizes), --output FILE (default bench/results.json). Each run starts its own
    Kafka broker unless MA_KAFKA_BOOTSTRAP is set; see bench/README.md.
    """
    checkout = _bench_checkout()
    if checkout is None:
        raise click.ClickException(
            "the benchmarks live in the ma-pipeline repository (bench/), not in the installed "
            "package: run `ma-pipeline bench` (or `make bench`) in a checkout"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from bench.__main__ import main as run_bench

    code = run_bench(list(args))
    if code:
        sys.exit(code)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


if __name__ == "__main__":
    main()
