"""The contact importer reads its file as a stream: memory does not grow with the file, and the
progress it reports is the bytes read so far."""

from __future__ import annotations

import asyncio
import io
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pipeline import codec
from pipeline.contacts import importer
from pipeline.contacts.importer import import_csv, read_rows
from pipeline.kafka import Record
from pipeline.settings import Settings

#: Each record carries notes over many lines (a dropped column): the file is big and long while
#: the records stay few, so the test is fast even with tracemalloc watching every allocation.
NOTE_LINES = 50
RECORDS = 4000  # 200,001 lines with the header


class CountingProducer:
    """Stands in for the Kafka producer: counts what it is sent and keeps nothing."""

    sent = 0
    dead_letters = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def start(self, give_up_after: float | None = None) -> None:
        pass

    async def send_all(self, records: list[Record]) -> None:
        for topic, key, value in records:
            if topic.endswith("dead-letter"):
                assert key is None and codec.loads(value)["source"] == "contacts import"
                CountingProducer.dead_letters += 1
                continue
            assert key is not None and codec.loads(value)["contact_id"] == key.decode()
            CountingProducer.sent += 1

    async def stop(self) -> None:
        pass


@pytest.fixture
def big_csv(tmp_path: Path) -> Path:
    path = tmp_path / "big.csv"
    note = "\n".join(["a line of notes from the CRM, in a column the import drops"] * NOTE_LINES)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,consent_email,title,notes\n")
        for i in range(RECORDS):
            consent = "yes" if i % 2 else "perhaps"  # every other record is refused
            handle.write(f'person{i}@acme.io,{consent},Manager,"{note}"\n')
    return path


async def test_a_large_file_is_imported_in_bounded_memory(
    big_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "JsonProducer", CountingProducer)
    monkeypatch.setattr(importer, "BATCH", 100)  # what waits for the broker is bounded too
    CountingProducer.sent = CountingProducer.dead_letters = 0
    progress: list[int] = []
    size = await asyncio.to_thread(os.path.getsize, big_csv)

    started = time.perf_counter()
    tracemalloc.start()
    try:
        result = await import_csv(Settings(), big_csv, source="import", mapping={"notes": ""},
                                  on_progress=progress.append)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.rows == RECORDS
    assert result.imported == CountingProducer.sent == RECORDS // 2
    assert result.skipped == CountingProducer.dead_letters == RECORDS // 2
    assert result.problems[1] == (
        f"line {2 + 2 * NOTE_LINES}: consent_email: 'perhaps' is not yes/no, true/false or 1/0"
    )  # the line where the record starts
    assert size > 10_000_000
    assert peak < size / 10, f"peak {peak} bytes for a {size}-byte file"
    # progress: bytes read so far, rising, ending at the file's size
    assert progress == sorted(progress) and progress[-1] == size and len(progress) > 2
    assert time.perf_counter() - started < 10


def test_problems_kept_are_bounded() -> None:
    result = importer.ImportResult()
    for line in range(2, 100_000):
        result.problem(line, "bad")
    assert result.skipped == 99_998
    assert len(result.problems) == importer.MAX_PROBLEMS_KEPT


def test_rows_are_read_lazily_from_any_iterable_of_lines() -> None:
    consumed = 0

    def lines() -> Any:
        nonlocal consumed
        yield "email,title\n"
        for i in range(10**9):  # far more than could ever be held
            consumed += 1
            yield f"p{i}@acme.io,CTO\n"

    rows = read_rows(lines())
    assert next(rows) == (2, {"email": "p0@acme.io", "title": "CTO"})
    assert next(rows) == (3, {"email": "p1@acme.io", "title": "CTO"})
    assert consumed == 2


def test_an_unreadable_record_is_reported_by_line_and_reading_goes_on() -> None:
    text = "email,bio\na@acme.io,x\nb@acme.io," + "y" * 200_000 + "\nc@acme.io,z\n"
    rows = list(read_rows(io.StringIO(text)))
    assert rows[0] == (2, {"email": "a@acme.io", "bio": "x"})
    line, error = rows[1]
    assert line == 3 and "field larger than field limit" in str(error)
    assert rows[2] == (4, {"email": "c@acme.io", "bio": "z"})


def test_line_numbers_are_where_records_start_past_blank_lines_and_line_breaks() -> None:
    text = 'email,bio,x\n\na@acme.io,"two\nlines",1\n\n\nb@acme.io\nc@acme.io,1,2,3\n'
    assert list(read_rows(io.StringIO(text))) == [
        (3, {"email": "a@acme.io", "bio": "two\nlines", "x": "1"}),
        (7, {"email": "b@acme.io", "bio": None, "x": None}),  # missing values are None
        (8, {"email": "c@acme.io", "bio": "1", "x": "2", None: ["3"]}),  # extra ones under None
    ]
