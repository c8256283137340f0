"""Applying ``schemas/clickhouse/*.sql`` in order, idempotently.

Each file runs once and is recorded in ``{db}.schema_migrations`` with its checksum; every
statement is also written to be re-runnable (``IF NOT EXISTS``). ``{db}`` in the files is the
configured database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"


@dataclass(frozen=True)
class Migration:
    name: str
    checksum: str
    statements: list[str]


def load_migrations(database: str, directory: Path = SCHEMA_DIR) -> list[Migration]:
    """The migration files in name order, with ``{db}`` replaced and split into statements."""
    migrations = []
    paths = sorted(directory.glob("*.sql"))
    if not paths:
        raise FileNotFoundError(
            f"no ClickHouse DDL found in {directory}: run from a checkout of ma-pipeline "
            "(pip install -e .), where schemas/clickhouse/*.sql lives"
        )
    for path in paths:
        text = path.read_text(encoding="utf-8")
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements = [s.strip() for s in body.replace("{db}", database).split(";") if s.strip()]
        checksum = hashlib.sha256(text.encode()).hexdigest()[:16]
        migrations.append(Migration(path.name, checksum, statements))
    return migrations


def migrate(client: Client, database: str) -> list[str]:
    """Create the database and apply pending migrations; return the names applied."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", database):
        raise ValueError(f"invalid database name {database!r}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {
        row[0] for row in client.query(f"SELECT name FROM {database}.schema_migrations").result_rows
    }
    applied = []
    for migration in load_migrations(database):
        if migration.name in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            f"{database}.schema_migrations",
            [(migration.name, migration.checksum, datetime.now(UTC))],
            column_names=["name", "checksum", "applied_at"],
        )
        applied.append(migration.name)
    return applied
