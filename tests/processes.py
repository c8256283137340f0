"""Running the real ``ma-pipeline`` commands as child processes in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class Process:
    """A ``ma-pipeline <command>`` child process with its output in a log file.

    ``Process.open`` holds the ones not yet stopped: a failing test's report shows their exit
    status and the tail of their logs (``tests/conftest.py``), since a child that died mid-test
    otherwise shows up only as a refused connection.
    """

    open: list[Process] = []  # one registry per test process

    def __init__(
        self, settings: Settings, *args: str, log: Path, env: dict[str, str] | None = None
    ):
        self.args = args
        self.log = log
        environment = {**os.environ, **settings.as_env(), **(env or {}), "PYTHONUNBUFFERED": "1"}
        environment.pop("MA_KAFKA_BOOTSTRAP", None)
        environment["MA_KAFKA_BOOTSTRAP"] = settings.bootstrap
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=REPO,
            env=environment,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Process.open.append(self)

    def summary(self, tail: int = 6000) -> str:
        """Its command, whether it still runs (or how it ended) and the end of its log."""
        code = self.popen.poll()
        state = "running" if code is None else f"exited with status {code}"
        return f"ma-pipeline {' '.join(self.args)} ({state}), {self.log}:\n{self.text()[-tail:]}"

    def _closed(self) -> None:
        self._out.close()
        if self in Process.open:
            Process.open.remove(self)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text()[after:]:
                return
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.args} exited ({self.popen.returncode}):\n{self.text()[-4000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.text()[-4000:]}")

    def kill(self) -> None:
        """``kill -9``: no clean shutdown, no flush, no commit."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._closed()

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._closed()
        return self.popen.returncode
