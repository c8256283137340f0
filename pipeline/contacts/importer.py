"""``ma-pipeline contacts import FILE.csv --source NAME``: stream a CSV of contacts onto
``ma.contact-updates``, where the worker's merge rules decide what each field becomes.

The file is read row by row (1M rows never sit in memory); each row is validated. A bad row is
reported with its line number, skipped, and written to ``ma.dead-letter`` as every rejected
input is (source ``contacts import``, the error, and the file, line and row); good rows are
imported. Columns ``email``, ``consent_email``, ``crm_status``, ``crm_id`` and ``created_at``
are recognised; every other column becomes an attribute. ``--map col=field`` renames a column
(``--map "E-mail=email"``, ``--map Position=title``); ``--map col=`` drops one.

Example::

    result = await import_csv(settings, Path("crm.csv"), source="import", mapping={})
    result.imported, result.problems[:3]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline import codec
from pipeline.clock import Clock
from pipeline.collect.validation import describe_validation_error
from pipeline.identity import contact_id_for, email_rejection, normalize_email
from pipeline.kafka import JsonProducer, Record
from pipeline.models.contacts import ContactUpsert
from pipeline.models.dead_letter import dead_letter_value
from pipeline.settings import Settings

CORE = ("email", "consent_email", "crm_status", "crm_id", "created_at")
TRUE = {"true", "yes", "y", "1", "on", "t"}
FALSE = {"false", "no", "n", "0", "off", "f", ""}
BATCH = 2000  # records sent together, and at most BATCH_BYTES of them
BATCH_BYTES = 1024 * 1024
MAX_PROBLEMS_KEPT = 1000
DEAD_LETTER_SOURCE = "contacts import"


@dataclass
class ImportResult:
    rows: int = 0
    imported: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, line: int, message: str) -> str:
        """Count a skipped row; returns its report line (``line N: what is wrong``)."""
        self.skipped += 1
        text = f"line {line}: {message}"
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)
        return text


def parse_mapping(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column:
            raise ValueError(f"--map {item!r}: expected COLUMN=FIELD (or COLUMN= to drop it)")
        mapping[column] = target
    return mapping


def row_to_update(
    row: dict[str, str | None], mapping: dict[str, str], source: str, received_at: datetime
) -> tuple[str, dict[str, Any]]:
    """The ``ma.contact-updates`` value of one CSV row; raises ``ValueError`` with what is wrong."""
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, raw in row.items():
        if column is None:
            raise ValueError("more values than columns in the header")
        name = mapping.get(column, column).strip()
        if not name:
            continue
        value = (raw or "").strip()
        if name in CORE:
            fields[name] = value
        elif value:
            attributes[name] = value
    if not fields.get("email"):
        raise ValueError("email: required; this row has none")
    consent = fields.get("consent_email")
    if consent is not None:
        lowered = consent.lower()
        if lowered not in TRUE | FALSE:
            raise ValueError(f"consent_email: {consent!r} is not yes/no, true/false or 1/0")
        fields["consent_email"] = lowered in TRUE if lowered else None
    for name in ("crm_status", "crm_id", "created_at"):
        if fields.get(name) == "":
            fields[name] = None
    try:
        contact = ContactUpsert.model_validate({**fields, "attributes": attributes})
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, "row").removeprefix("row.")) from exc
    email = normalize_email(contact.email)
    problem = email_rejection(email)
    if problem:
        raise ValueError(f"email {contact.email!r}: {problem}")
    contact_id = str(contact_id_for(email))
    update = {
        "contact_id": contact_id,
        "op": "upsert",
        "source": source,
        "email": email,
        "attributes": contact.attributes,
        "consent_email": contact.consent_email,
        "crm_status": contact.crm_status,
        "crm_id": contact.crm_id,
        "created_at": contact.created_at,
        "received_at": received_at,
    }
    return contact_id, {k: v for k, v in update.items() if v is not None}


def read_rows(handle: Iterable[str]) -> Iterator[tuple[int, dict[str, str | None] | csv.Error]]:
    """``(line number, row)`` pairs, lazily, as ``csv.DictReader`` makes them (missing values
    ``None``, extra ones under the key ``None``); blank lines are skipped.

    The line number is where the record starts (the header is line 1), also for a record with
    line breaks inside quotes. A record the csv module cannot read (a field over its size
    limit) comes as its ``csv.Error`` instead of a row, and reading goes on after it.
    """
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, exc
            continue
        if not values:
            continue
        row: dict[Any, Any] = dict(zip(header, values, strict=False))
        if len(values) > len(header):
            row[None] = values[len(header) :]
        for column in header[len(values) :]:
            row[column] = None
        yield start, row


async def import_csv(
    settings: Settings,
    path: Path,
    *,
    source: str,
    mapping: dict[str, str],
    clock: Clock | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import ``path``; see the module docstring."""
    clock = clock or settings.clock()
    result = ImportResult()
    topic, dead_letters = settings.topic("contact-updates"), settings.topic("dead-letter")
    producer = JsonProducer(settings, ack_timeout=30, linger_ms=20, client_id="ma-import")
    await producer.start(give_up_after=10)
    try:
        with (
            path.open("rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle,
        ):
            header = next(csv.reader([handle.readline()]), [])
            columns = [mapping.get(c, c).strip() for c in header]
            if "email" not in columns:
                raise ValueError(f"{path}: no email column (columns: {', '.join(header)}); "
                                 "map one with --map COLUMN=email")  # fmt: skip
            handle.seek(0)
            batch: list[Record] = []  # updates and dead letters, in file order
            updates = size = 0  # of them, updates; their bytes

            def dead_letter(line: int, error: str, row: dict[str, Any] | None) -> Record:
                payload: dict[str, Any] = {"file": path.name, "line": line, "source": source}
                if row is not None:
                    # values past the header's columns are under the key None
                    payload["row"] = {"(extra)" if k is None else k: v for k, v in row.items()}
                value = dead_letter_value(clock.now(), DEAD_LETTER_SOURCE, error, payload)
                return (dead_letters, None, codec.held(codec.dumps(value)))

            for line, row in read_rows(handle):
                result.rows += 1
                if isinstance(row, csv.Error):
                    error = result.problem(line, f"unreadable CSV record: {row}")
                    record = dead_letter(line, error, None)
                else:
                    try:
                        key, update = row_to_update(row, mapping, source, clock.now())
                    except ValueError as exc:
                        record = dead_letter(line, result.problem(line, str(exc)), row)
                    else:
                        record = (topic, key.encode(), codec.held(codec.dumps(update)))
                        updates += 1
                batch.append(record)
                size += len(record[2])
                if len(batch) >= BATCH or size >= BATCH_BYTES:
                    await producer.send_all(batch)
                    result.imported += updates
                    batch, updates, size = [], 0, 0
                    if on_progress is not None:
                        # the bytes read so far (a text file's tell() fails while iterating)
                        on_progress(raw.tell())
            if batch:
                await producer.send_all(batch)
                result.imported += updates
            if on_progress is not None:
                on_progress(handle.tell())  # the end of the file
    finally:
        await producer.stop()
    return result
