"""CONTRACT §7: every command fails with one line a person can act on and a non-zero exit, never
a traceback (port in use, data folder locked by another process, broker unreachable). The real
``ma-pipeline`` in a child process; no broker needed: each fails before it would use one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import DataFolderLock
from tests.conftest import REPO, free_port


def ma_pipeline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "MA_CONFIG": str(REPO / "config" / "rules.yaml"),
        "MA_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens there
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    ["topics", "collector", "worker", "sink", "deliver", "tail events", "triggers tail",
     "forget ann@initech.io", "contacts import {csv} --source crm"],
)  # fmt: skip
def test_an_unreachable_broker_is_one_line(command: str, tmp_path: Path) -> None:
    """Services and one-shot commands alike (tail's consumer, and forget's and import's
    producer, retrying for 10 s, printed aiokafka's errors, their retries and a blank line)."""
    csv = tmp_path / "contacts.csv"
    csv.write_text("email\nann@initech.io\n")
    names = ("MA_HTTP_PORT", "MA_WORKER_WEB_PORT", "MA_SINK_WEB_PORT", "MA_DELIVER_WEB_PORT")
    ports = {name: str(free_port()) for name in names}
    args = command.format(csv=csv).split()
    line = one_line(ma_pipeline(*args, MA_DATA_DIR=str(tmp_path), **ports))
    assert line.startswith("Error: cannot reach the Kafka broker at 127.0.0.1:")
    assert "MA_KAFKA_BOOTSTRAP" in line


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("worker", "MA_WORKER_WEB_PORT"),
        ("collector", "MA_HTTP_PORT"),
        ("sink", "MA_SINK_WEB_PORT"),
        ("deliver", "MA_DELIVER_WEB_PORT"),
    ],
)
def test_a_port_in_use_is_one_line(
    command: str, variable: str, listening: int, tmp_path: Path
) -> None:
    line = one_line(
        ma_pipeline(command, **{variable: str(listening), "MA_DATA_DIR": str(tmp_path)})
    )
    in_use = f"port 127.0.0.1:{listening} is in use by another process"
    assert line == f"Error: {in_use}: stop it, or set {variable}"


def test_a_data_folder_in_use_is_one_line(tmp_path: Path) -> None:
    held = DataFolderLock(tmp_path / "worker", "ma-pipeline run").acquire()
    line = one_line(
        ma_pipeline("worker", MA_DATA_DIR=str(tmp_path), MA_WORKER_WEB_PORT=str(free_port()))
    )
    holder = f"ma-pipeline run (pid {os.getpid()})"
    assert line.startswith(f"Error: the data folder {tmp_path / 'worker'} is in use by {holder}")
    assert "MA_DATA_DIR" in line
    del held


def test_a_worker_that_crashed_after_starting_does_not_exit_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mode's worker exits 0 whatever happened once it ran; ``execute`` looks at whether the
    app or the worker crashed and says so in one line (non-zero through the CLI)."""
    from types import SimpleNamespace

    from pipeline.errors import ServiceCrashed, one_line
    from pipeline.worker import main

    class Ran:  # what mode's worker does after a service crashed: stops, exits 0
        crashed, crash_reason = False, None
        on_ready = None

        def __init__(self, app: object, **options: object) -> None:
            pass

        def execute_from_commandline(self) -> None:
            raise SystemExit(0)

    monkeypatch.setattr(main, "_FaustWorker", Ran)
    app = SimpleNamespace(crashed=True, crash_reason=RuntimeError("agent stitch failed"))
    worker = SimpleNamespace(settings=SimpleNamespace(log_level="info"), app=app, api_ready=None)
    with pytest.raises(ServiceCrashed) as raised:
        main.execute(worker)  # type: ignore[arg-type]
    line = one_line(raised.value, None)
    assert line is not None and "agent stitch failed" in line and "\n" not in line
    app.crashed = False  # a clean stop (SIGTERM) returns
    main.execute(worker)  # type: ignore[arg-type]
