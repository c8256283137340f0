"""The ClickHouse sink's writer, next to a raw clickhouse-connect insert of the same rows.

The worker's sink turns each topic value into rows (``pipeline.sink.rows_for``) and hands a batch
of up to ``SINK_BATCH`` values to ``pipeline.sink.SinkWriter.write``, which skips rows whose
key is already stored (a Bloom filter of the stored keys, ``pipeline.sink.stored``, and a lookup
of the keys it cannot rule out) and inserts each
table's rows with an ``insert_deduplication_token``. The baseline inserts exactly the same rows,
table by table and batch by batch, with plain ``client.insert`` into another database on the
same chDB engine: the difference is what idempotence costs. A second baseline does the same with
each table's column types given (as the writer does, asked once), which spares clickhouse-connect
the ``DESCRIBE TABLE`` it otherwise runs before every insert: the writer against it is what
idempotence alone costs.

Traffic: ``bench.traffic.contact_work_values`` (resolved events, ~60% of a contact) plus the
records the worker produces for them, in about the proportions it does: a score change for
most events (and the contact's current score), an identity decision for each identify and form,
a trigger now and then. Each run uses new ids (a replay would be deduplicated, not inserted).
The two writers alternate run by run.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from functools import partial
from typing import Any

from clickhouse_connect.driver.client import Client

from bench import BenchContext, Measurement, Section, Timer, section
from pipeline.clickhouse import connect
from pipeline.clickhouse.migrate import migrate
from pipeline.sink import TABLE_COLUMNS, SinkWriter, rows_for
from pipeline.topics import CONTACT_WORK

#: As the worker's sink batches (``pipeline.sink.loop.BATCH``).
SINK_BATCH = 10_000
Rows = list[tuple[str, tuple[Any, ...]]]


def sink_values(n: int, *, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """About ``n`` ``(topic, value)`` pairs the sink reads, as the worker writes them."""
    from bench.traffic import contact_work_values

    rng = random.Random(seed)
    values: list[tuple[str, dict[str, Any]]] = []
    scores: dict[str, float] = {}
    for work in contact_work_values(int(n / 1.8), seed=seed):
        values.append((CONTACT_WORK, work))
        e = work["e"]
        contact, aid, at = e.get("contact_id"), e["anonymous_id"], e["received_at"]
        if e["type"] in ("identify", "form_submit"):
            values.append(
                (
                    "identities",
                    {
                        "anonymous_id": aid,
                        "contact_id": contact,
                        "previous_contact_id": None,
                        "reason": "identify" if e["type"] == "identify" else "form_submit",
                        "event_id": e["event_id"],
                        "at": at,
                    },
                )
            )
        if rng.random() < 0.7:
            subject = contact or aid
            delta = rng.choice([1.0, 3.0, 10.0, 15.0, 40.0])
            scores[subject] = score = scores.get(subject, 0.0) + delta
            stage = "sql" if score >= 100 else "mql" if score >= 50 else "lead"
            values.append(
                (
                    "scores",
                    {
                        "contact_id": contact,
                        "anonymous_id": None if contact else aid,
                        "score": score,
                        "delta": delta,
                        "rule": "pricing-view",
                        "event_id": e["event_id"],
                        "lifecycle_stage": stage,
                        "at": at,
                    },
                )
            )
            if rng.random() < 0.03:
                values.append(
                    (
                        "triggers",
                        {
                            "trigger_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                            "rule": "mql-sales-alert",
                            "channel": "sales",
                            "contact_id": contact,
                            "anonymous_id": aid,
                            "fired_at": at,
                            "due_at": at,
                            "score": score,
                            "cause_event_ids": [e["event_id"]],
                            "attributes": {"title": "CTO"},
                        },
                    )
                )
    return values


def _batches(values: list[tuple[str, dict[str, Any]]]) -> list[Rows]:
    """Rows per sink batch (``SINK_BATCH`` values each), as the worker's sink builds them."""
    batches = []
    for start in range(0, len(values), SINK_BATCH):
        rows: Rows = []
        for topic, value in values[start : start + SINK_BATCH]:
            rows += rows_for(topic, value)
        batches.append(rows)
    return batches


def _raw_insert(
    client: Client, *, database: str, rows: Rows, types: dict[str, Any] | None = None
) -> int:
    """Plain inserts; with ``types`` (a dict filled on first use) each table's column types
    are asked once and given to every later insert."""
    by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for table, row in rows:
        by_table[table].append(row)
    for table, table_rows in by_table.items():
        name, columns = f"{database}.{table}", list(TABLE_COLUMNS[table])
        column_types = None
        if types is not None:
            if table not in types:
                types[table] = client.create_insert_context(name, columns).column_types
            column_types = types[table]
        client.insert(name, table_rows, column_names=columns, column_types=column_types)
    return len(rows)


def _count(client: Client, database: str) -> dict[str, int]:
    return {
        table: int(client.query(f"SELECT count() FROM {database}.{table}").result_rows[0][0])
        for table in TABLE_COLUMNS
    }


@section("sink")
async def sink(ctx: BenchContext, out: Section) -> None:
    """pipeline.sink.SinkWriter (idempotent) vs raw clickhouse-connect inserts into chDB."""
    n = ctx.scale(100_000, 10_000)
    sink_db, raw_db, typed_db = "bench_sink", "bench_sink_raw", "bench_sink_typed"
    # one ClickHouse (one client, one thread) on the run's chDB path serves both databases
    clickhouse = connect(ctx.settings.model_copy(update={"clickhouse_database": sink_db}))
    try:
        for database in (sink_db, raw_db, typed_db):
            await clickhouse.run(partial(migrate, database=database))
        writer = SinkWriter(clickhouse)
        modes = ("sink", "raw", "typed")
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        types: dict[str, Any] = {}
        written: dict[str, int] = defaultdict(int)
        per_run = 0
        for i in range(-1, 3):  # a warm-up, then three runs
            batches = _batches(sink_values(n // 4 if i < 0 else n, seed=500 + i))
            total = sum(len(b) for b in batches)
            order = modes[i % 3 :] + modes[: i % 3]  # each mode goes first in turn
            for mode in order:
                with Timer() as t:
                    for b, rows in enumerate(batches):
                        if mode == "sink":
                            counts = await writer.write(rows, f"bench-{i}-{b}")
                            written[mode] += sum(counts.values())
                        else:
                            insert = partial(
                                _raw_insert,
                                database=raw_db if mode == "raw" else typed_db,
                                rows=rows,
                                types=types if mode == "typed" else None,
                            )
                            written[mode] += await clickhouse.run(insert)
                if i >= 0:
                    rates[mode].append(total / t.seconds)
                    per_run = total
            ctx.log(
                f"run {i}: {total:,} rows in {len(batches)} batches: "
                + ", ".join(f"{m} {r[-1]:,.0f} rows/s" for m, r in rates.items() if r and i >= 0)
            )
        # both must have stored the same rows, and the sink every row it was given once
        stored = {
            db: await clickhouse.run(partial(_count, database=db))
            for db in (sink_db, raw_db, typed_db)
        }
        # score_state is a versioned table: the sink may keep only the latest per contact
        counted = [
            {k: v for k, v in stored[db].items() if k != "score_state"}
            for db in (sink_db, raw_db, typed_db)
        ]
        if counted[0] != counted[1] or counted[1] != counted[2]:
            raise RuntimeError(f"the sink and the raw inserts stored different rows: {stored}")
        if not written["sink"] == written["raw"] == written["typed"]:
            raise RuntimeError(f"rows written: {dict(written)}")
        mix = ", ".join(f"{t} {c:,}" for t, c in stored[raw_db].items() if c)
        raw, typed = Measurement(rates["raw"]), Measurement(rates["typed"])
        vs_typed = Measurement(rates["sink"]).median / typed.median
        out.add(
            "sink.raw_insert",
            raw,
            "rows/s",
            note=f"clickhouse-connect insert() per table and batch, no dedup; {per_run:,} rows "
            f"per run in {SINK_BATCH:,}-value batches",
        )
        out.add(
            "sink.raw_insert_typed",
            typed,
            "rows/s",
            baseline="sink.raw_insert",
            note="the same inserts with each table's column types given (asked once), as the "
            "writer does: no DESCRIBE TABLE before each insert",
        )
        out.add(
            "sink.writer",
            Measurement(rates["sink"]),
            "rows/s",
            baseline="sink.raw_insert",
            note=f"SinkWriter.write: stored-key filter (+ lookups of what it cannot rule out) "
            f"+ dedup tokens; {vs_typed:.2f} x sink.raw_insert_typed; "
            f"rows stored over all runs: {mix}; "
            "goal >= 0.8 x raw",
            extra={"vs_raw_insert_typed": round(vs_typed, 3)},
        )
    finally:
        clickhouse.close()
