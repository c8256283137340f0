"""Who may open the console (CONTRACT §8): the token, a key with the console scope, a session
from a login with either; open without credentials only while the API is on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from pipeline.console.auth import COOKIE, ConsoleGuard, is_loopback
from pipeline.rules import RulesWatcher
from pipeline.settings import Settings

TOKEN = "ct_unit_console_token_0123456789"
KEY = "mak_console_key_for_operators_01"
RULES = f"""
keys:
  - id: ops
    sha256: {hashlib.sha256(KEY.encode()).hexdigest()}
    scopes: [console]
  - id: crm
    sha256: {hashlib.sha256(b"mak_crm_key_without_console_000").hexdigest()}
    scopes: [contacts:write]
"""


def guard(tmp_path: Path, rules: str = "", **settings: object) -> ConsoleGuard:
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    return ConsoleGuard(Settings(config=path, **settings), RulesWatcher(path))  # type: ignore[arg-type]


def request(path: str = "/console/health", headers: dict[str, str] | None = None) -> object:
    return make_mocked_request("GET", path, headers=headers or {})


def test_without_credentials_the_console_is_open_on_loopback_only(tmp_path: Path) -> None:
    assert guard(tmp_path).refuse(request()) is None  # type: ignore[arg-type]
    beyond = guard(tmp_path, worker_web_host="0.0.0.0")
    refused = beyond.refuse(request())  # type: ignore[arg-type]
    assert refused is not None and refused.status == 401
    assert "MA_CONSOLE_TOKEN" in refused.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("secret", [TOKEN, KEY])
def test_the_token_or_a_console_key_opens_it(tmp_path: Path, secret: str) -> None:
    console = guard(tmp_path, RULES, console_token=TOKEN)
    assert console.refuse(request(headers={"Authorization": f"Bearer {secret}"})) is None  # type: ignore[arg-type]
    refused = console.refuse(request())  # type: ignore[arg-type]
    assert refused is not None and refused.status == 401


def test_a_key_without_the_console_scope_gets_403_naming_it_and_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    told: list[tuple[str, str]] = []
    console = ConsoleGuard(Settings(config=path), RulesWatcher(path),
                           on_forbidden=lambda *refusal: told.append(refusal))  # fmt: skip
    bearer = {"Authorization": "Bearer mak_crm_key_without_console_000"}
    refused = console.refuse(request(headers=bearer))  # type: ignore[arg-type]
    assert refused is not None and refused.status == 403
    message = "scope console required: key 'crm' does not have it"
    assert message in refused.text  # type: ignore[attr-defined]
    login = console.refuse(request("/console/funnel?token=mak_crm_key_without_console_000"))  # type: ignore[arg-type]
    assert login is not None and login.status == 403
    assert told == [("/console/health", message), ("/console/funnel", message)]
    unknown = console.refuse(request(headers={"Authorization": "Bearer not-a-key-of-ours"}))  # type: ignore[arg-type]
    assert unknown is not None and unknown.status == 401


def test_a_login_gives_a_session_that_opens_it_and_a_forged_one_does_not(tmp_path: Path) -> None:
    console = guard(tmp_path, console_token=TOKEN)
    login = console.refuse(request(f"/console/contact?email=a%40b.io&token={TOKEN}"))  # type: ignore[arg-type]
    assert login is not None and login.status == 303
    assert login.headers["Location"] in (
        "/console/contact?email=a%40b.io",
        "/console/contact?email=a@b.io",
    )
    session = login.cookies[COOKIE].value
    assert login.cookies[COOKIE]["httponly"] and login.cookies[COOKIE]["samesite"] == "Strict"
    assert console.refuse(request(headers={"Cookie": f"{COOKIE}={session}"})) is None  # type: ignore[arg-type]
    forged = console.refuse(request(headers={"Cookie": f"{COOKIE}=forged"}))  # type: ignore[arg-type]
    assert forged is not None and forged.status == 401


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("", False),
     ("10.0.0.5", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
