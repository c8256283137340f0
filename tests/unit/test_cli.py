"""The command line: commands that need no running service."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import contact_id_for, links
from pipeline.cli import main
from pipeline.settings import parse_link_secrets
from tests.conftest import REPO

SECRETS = "k2:test-signing-secret-0002,k1:test-signing-secret-0001"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MA_LINK_SECRETS", SECRETS)
    monkeypatch.setenv("MA_PUBLIC_URL", "https://collect.acme.example")
    monkeypatch.setenv("MA_CONFIG", str(REPO / "config" / "rules.yaml"))
    return CliRunner()


def test_links_sign_prints_a_verifiable_click_link(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "links",
            "sign",
            "--email",
            "Ana@Acme.io",
            "--url",
            "https://www.acme.example/pricing",
            "--campaign",
            "spring",
        ],
    )
    assert result.exit_code == 0, result.output
    url = result.output.strip()
    assert url.startswith("https://collect.acme.example/c/")
    claims = links.verify(
        url.rsplit("/", 1)[1],
        keys=parse_link_secrets(SECRETS),
        now=datetime.now(UTC),
        purpose="click",
    )
    assert claims.contact_id == str(contact_id_for("ana@acme.io"))
    assert claims.url == "https://www.acme.example/pricing" and claims.kid == "k2"
    assert claims.site_id == "acme"  # the rules' only site: its click is counted for it


def test_links_sign_asks_for_a_site_when_the_rules_have_several(
    runner: CliRunner, tmp_path: Path
) -> None:
    text = (REPO / "config" / "rules.yaml").read_text()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        text.replace(
            "sites:\n",
            "sites:\n  - id: beta\n    write_key: wk_beta_public_0001\n"
            "    server_key: sk_beta_secret_0001_abcdef\n    allowed_origins: []\n",
            1,
        )
    )
    args = ["links", "sign", "--email", "a@acme.io", "--url", "https://www.acme.example/"]
    result = runner.invoke(main, args, env={"MA_CONFIG": str(rules)})
    assert result.exit_code == 2 and "give --site" in result.output, result.output
    assert "beta, acme" in result.output or "acme, beta" in result.output
    signed = runner.invoke(main, [*args, "--site", "beta"], env={"MA_CONFIG": str(rules)})
    assert signed.exit_code == 0, signed.output


def test_links_sign_makes_unsubscribe_links(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "links",
            "sign",
            "--contact-id",
            str(contact_id_for("a@acme.io")),
            "--purpose",
            "unsubscribe",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "/u/" in result.output


def test_links_sign_refuses_a_javascript_url(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["links", "sign", "--email", "a@acme.io", "--url", "javascript:alert(1)"]
    )
    assert result.exit_code != 0
    assert "Error" in result.output


def test_segments_list_names_every_segment(runner: CliRunner) -> None:
    result = runner.invoke(main, ["segments", "list"])
    assert result.exit_code == 0, result.output
    names = [line.split("\t")[0] for line in result.output.splitlines()]
    assert names == ["marketing-managers-engaged", "sales-ready", "stale-leads"]


def test_an_unknown_segment_is_named_with_the_known_ones(runner: CliRunner) -> None:
    result = runner.invoke(main, ["segments", "count", "nope"])
    assert result.exit_code != 0
    assert "no segment 'nope'" in result.output and "sales-ready" in result.output


def test_a_broken_rules_file_is_reported_with_file_line_and_field(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("segments:\n  - name: x\n    wher: {}\n")
    monkeypatch.setenv("MA_CONFIG", str(rules))
    result = runner.invoke(main, ["segments", "list"])
    assert result.exit_code != 0
    assert f"{rules}:3: segments[0].wher: unknown field" in result.output


def test_invalid_environment_is_refused_clearly(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MA_HTTP_PORT", "not-a-port")
    monkeypatch.setenv("MA_BATCH_WINDOW", "0")
    result = runner.invoke(main, ["segments", "list"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()  # one line, both variables named
    assert line.startswith("Error: invalid MA_* environment: ")
    assert "MA_HTTP_PORT: Input should be a valid integer" in line
    assert "MA_BATCH_WINDOW: Input should be greater than 0" in line


def test_migrate_and_query_work_on_an_embedded_database(tmp_path: Path) -> None:
    # a child process: this test process may already hold another chDB path
    env = {
        "MA_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
        "PATH": "/usr/bin:/bin",
        "MA_WORKER_URL": "http://127.0.0.1:1",
    }
    run = [sys.executable, "-m", "pipeline.cli"]
    first = subprocess.run([*run, "migrate"], env=env, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "applied to" in first.stdout and "001_events.sql" in first.stdout
    again = subprocess.run([*run, "migrate"], env=env, cwd=REPO, capture_output=True, text=True)
    assert "schema up to date" in again.stdout
    query = subprocess.run(
        [*run, "query", "SELECT count() AS n FROM events", "--format", "csv"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["n", "0"]
    refused = subprocess.run(
        [*run, "query", "DROP TABLE events"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "readonly" in refused.stderr.lower()


def test_bench_lists_the_benchmark_sections(runner: CliRunner) -> None:
    result = runner.invoke(main, ["bench", "--list"])
    assert result.exit_code == 0, result.output
    sections = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert sections[0] == "baselines"
    assert {"collector", "worker", "sink", "segments", "latency"} <= set(sections)


def test_bench_help_says_it_needs_a_source_checkout(runner: CliRunner) -> None:
    result = runner.invoke(main, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert "source checkout" in result.output and "--list" in result.output


def test_rules_check_says_ok_with_what_the_file_holds(runner: CliRunner) -> None:
    result = runner.invoke(main, ["rules", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{REPO / 'config' / 'rules.yaml'}: ok (1 site, ")


def test_rules_check_warns_of_a_key_whose_variable_is_unset(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MA_KEY_OPS", raising=False)
    rules = tmp_path / "rules.yaml"
    rules.write_text("keys:\n  - {id: ops, secret_env: MA_KEY_OPS, scopes: [console]}\n")
    result = runner.invoke(main, ["rules", "check", str(rules)])
    assert result.exit_code == 0, result.output
    assert f"{rules}: warning: keys: 'ops' is disabled: $MA_KEY_OPS is not set" in result.output


def test_keys_new_prints_a_secret_once_and_only_its_hash_for_the_file(runner: CliRunner) -> None:
    import hashlib

    from pipeline.rules import parse_rules

    result = runner.invoke(
        main,
        ["keys", "new", "--id", "crm", "--scope", "contacts:write", "--scope", "segments:read"],
    )
    assert result.exit_code == 0, result.output
    first, second, *entry = result.output.splitlines()
    secret = first.rsplit(" ", 1)[1]
    assert second == "add to the rules file under keys:"
    parsed = parse_rules("keys:\n" + "\n".join(entry))
    assert parsed.keys[0].sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert parsed.keys[0].scopes == ["contacts:write", "segments:read"]
    assert secret not in "\n".join(entry)


def test_keys_new_refuses_an_unknown_scope_in_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["keys", "new", "--scope", "admin"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: scopes: 'admin' is not a scope; scopes are ingest:<site id>, contacts:write, "
        "segments:read, profiles:read, console"
    ]


def test_rules_check_names_each_problem_with_file_line_and_the_missing_field(
    runner: CliRunner, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("sites:\n  - id: acme\n    write_key: wk\n    allowed_origin: [x]\n")
    result = runner.invoke(main, ["rules", "check", str(rules)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{rules}:2: sites[0].server_key: required field is missing" in lines
    assert f"{rules}:4: sites[0].allowed_origin: unknown field" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["worker", "collector", "run"])
def test_a_service_refuses_a_missing_rules_file_in_one_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("MA_CONFIG", str(tmp_path / "nope.yaml"))
    result = runner.invoke(main, [command])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'nope.yaml'}: cannot read the rules file: No such file or directory"
    ]
