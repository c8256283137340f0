"""``ma-pipeline contacts import`` end to end: the real command (a child process) writes onto the
stack's ``contact-updates``, the worker merges, ClickHouse ``contacts`` shows the result."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import contact_id_for
from pipeline.settings import Settings
from tests.conftest import REPO
from tests.integration.worker.conftest import Stack, eventually, new_email

pytestmark = pytest.mark.integration

HEADER = ["email", "first_name", "title", "department", "consent_email", "crm_id", "bio"]


def run_import(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``ma-pipeline contacts import <args>`` with the stack's settings (its broker and topics)."""
    env = {**os.environ, **settings.as_env(), "MA_KAFKA_BOOTSTRAP": settings.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "contacts", "import", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


async def contacts_of(stack: Stack, emails: list[str]) -> dict[str, list[Any]]:
    rows = await stack.query(
        "SELECT email, attributes, consent_email, crm_id FROM {db}.contacts "
        "WHERE email IN {e:Array(String)}", e=emails)  # fmt: skip
    return {row[0]: row[1:] for row in rows}


async def test_good_rows_become_contacts_and_bad_rows_are_reported_by_line(
    stack: Stack, tmp_path: Path
) -> None:
    ana, bo, cy = new_email("ana"), new_email("bo"), new_email("cy")
    bad = {name: new_email(name) for name in ("consent", "long", "huge", "extra")}
    # The CRM knows Ana's title already: for titles the merge rules rank crm above import.
    await stack.contacts("crm", {"email": ana, "attributes": {"title": "VP Marketing"}})
    rows = [
        HEADER,
        [ana, "Ana", "Intern", "marketing", "yes", "crm-1", ""],            # line 2
        ["ana-at-acme.io", "Bad", "", "", "yes", "", ""],                   # 3: bad email
        ["test@test.com", "Test", "", "", "yes", "", ""],                   # 4: placeholder
        [bad["consent"], "Con", "", "", "maybe", "", ""],                   # 5: consent value
        ["", "Nobody", "", "", "no", "", ""],                               # 6: email missing
        [bad["long"], "Lo", "", "", "no", "", "b" * 3000],                  # 7: over 2048
        [bad["huge"], "Hu", "", "", "no", "", "h" * 200_000],               # 8: over csv's limit
        [bo, "Bo", "Engineer", "engineering", "no", "crm-2", "likes tea"],  # 9
        [bo, "Bo", "Engineer", "engineering", "no", "crm-2", "likes tea"],  # 10: duplicate of 9
        [cy],                                                               # 11: short row
        [bad["extra"], "Ex", "", "", "no", "", "", "one too many"],         # 12: extra value
    ]  # fmt: skip
    file = write_csv(tmp_path / "crm-export.csv", rows)
    report = tmp_path / "problems.txt"

    args = (str(file), "--source", "import", "--report", str(report))
    result = await asyncio.to_thread(run_import, stack.settings, *args)

    assert result.returncode == 0, result.stderr  # skipped rows are reported, not fatal
    assert result.stdout.strip().endswith("11 rows: 4 imported, 7 skipped")
    problems = report.read_text().splitlines()
    assert problems == [
        "line 3: email 'ana-at-acme.io': not an email address",
        "line 4: email 'test@test.com': placeholder address",
        "line 5: consent_email: 'maybe' is not yes/no, true/false or 1/0",
        "line 6: email: required; this row has none",
        "line 7: attributes: bio: text longer than 2048 characters",
        "line 8: unreadable CSV record: field larger than field limit (131072)",
        "line 12: more values than columns in the header",
    ]
    for problem in problems:  # the same list on stderr, for the person at the terminal
        assert f"skipped {problem}" in result.stderr

    # and on ma.dead-letter, as every rejected input: the error, the file, line and row
    def ours(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [v for v in values if v["source"] == "contacts import"
                and v["payload"]["file"] == "crm-export.csv"]  # fmt: skip

    async with stack.reader("dead-letter") as reader:
        await reader.wait_for(lambda values: len(ours(values)) >= 7, timeout=30)
        await reader.settle(0.5)
    dead = ours(reader.values)
    assert sorted(v["error"] for v in dead) == sorted(problems)  # unkeyed: any partition
    assert all(v["received_at"] and v["payload"]["source"] == "import" for v in dead)
    by_line = {v["payload"]["line"]: v["payload"] for v in dead}
    assert by_line[5]["row"] == dict(zip(HEADER, rows[4], strict=True))
    assert by_line[7]["row"]["bio"] == "b" * 3000
    assert "row" not in by_line[8]  # the csv module could not read it
    assert by_line[12]["row"]["(extra)"] == ["one too many"]

    contacts = await eventually(
        lambda: _when_all(contacts_of(stack, [ana, bo, cy]), 3), timeout=60)  # fmt: skip
    attributes, consent, crm_id = contacts[ana]
    assert attributes["title"] == "VP Marketing"  # crm beats import for title
    assert attributes["first_name"] == "Ana" and attributes["department"] == "marketing"
    assert (consent, crm_id) == (1, "crm-1")
    attributes, consent, crm_id = contacts[bo]
    assert attributes == {"first_name": "Bo", "title": "Engineer", "department": "engineering",
                          "bio": "likes tea"}  # fmt: skip
    assert (consent, crm_id) == (0, "crm-2")
    assert contacts[cy][0] == {}

    await stack.quiescent()
    assert await contacts_of(stack, list(bad.values())) == {}  # bad rows made nobody
    [[bo_rows]] = await stack.query(
        "SELECT count() FROM {db}.contacts WHERE contact_id = {c:String}",
        c=str(contact_id_for(bo)))  # fmt: skip
    assert bo_rows == 1  # the duplicated row is one contact


async def _when_all(query: Any, count: int) -> dict[str, list[Any]] | None:
    found: dict[str, list[Any]] = await query
    return found if len(found) == count else None


async def test_columns_are_renamed_or_dropped_with_map(stack: Stack, tmp_path: Path) -> None:
    dee = new_email("dee")
    rows = [
        ["E-mail", "Position", "Notes", "Opt-in"],
        [dee, "Head of Growth", "met at a fair", "1"],
    ]
    file = write_csv(tmp_path / "export.csv", rows)

    result = await asyncio.to_thread(
        run_import, stack.settings, str(file), "--source", "import", "--map", "E-mail=email",
        "--map", "Position=title", "--map", "Notes=", "--map", "Opt-in=consent_email")  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("1 rows: 1 imported, 0 skipped")
    contacts = await eventually(lambda: _when_all(contacts_of(stack, [dee]), 1), timeout=60)
    attributes, consent, _ = contacts[dee]
    assert attributes == {"title": "Head of Growth"}
    assert consent == 1


async def test_a_file_without_an_email_column_is_refused_whole(
    stack: Stack, tmp_path: Path
) -> None:
    someone = new_email("someone")
    file = write_csv(tmp_path / "no-email.csv", [["E-mail", "title"], [someone, "CTO"]])

    result = await asyncio.to_thread(run_import, stack.settings, str(file), "--source", "import")

    assert result.returncode == 1
    assert "no email column (columns: E-mail, title)" in result.stderr
    assert "--map COLUMN=email" in result.stderr
    await stack.quiescent()
    assert await contacts_of(stack, [someone]) == {}


async def test_an_unknown_map_syntax_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "x.csv", [["email"], [new_email()]])
    result = await asyncio.to_thread(
        run_import, stack.settings, str(file), "--source", "import", "--map", "E-mail")  # fmt: skip
    assert result.returncode == 2
    assert "expected COLUMN=FIELD" in result.stderr
