"""Child processes of a bench run: the real ``ma-pipeline worker``, the collector runner, the
bare loops. Each logs to a file in the run's scratch directory and is counted as *our* CPU
(``BenchContext.pids``) while it runs.

Example::

    worker = Child.start(ctx, ["-m", "pipeline.cli", "worker"], settings, "worker")
    await worker.wait_for("worker ready", timeout=90)
    ...
    worker.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import BenchContext
from bench.report import REPO
from pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A Python child process (``python <args>``) with ``MA_*`` settings in its environment."""

    def __init__(self, ctx: BenchContext, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.ctx = ctx
        self.popen = popen
        self.log = log

    @classmethod
    def start(
        cls,
        ctx: BenchContext,
        args: list[str],
        settings: Settings,
        name: str,
        env: dict[str, str] | None = None,
    ) -> Child:
        log = ctx.scratch / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **settings.as_env(), **(env or {}), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, *args]
        if profile := os.environ.get("MA_BENCH_PROFILE"):
            # py-spy on PATH: each child's samples, collapsed stacks, in that folder
            folder = Path(profile)
            folder.mkdir(parents=True, exist_ok=True)
            out_file = folder / f"{name}.txt"
            command = ["py-spy", "record", "--format", "raw", "-r", "200", "-o", str(out_file)]
            command += ["--", *[sys.executable, *args]]
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=REPO,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ctx.pids.append(popen.pid)
        return cls(ctx, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_for(self, needle: str, timeout: float = 60) -> None:
        """Wait until ``needle`` appears in the log; fail with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.log.stem} exited ({self.popen.returncode}):\n{self.text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.log.stem}: {needle!r} not logged within {timeout} s:\n"
                    f"{self.text()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process has used so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (then SIGKILL) the child's process group and wait for it."""
        if self.popen.poll() is None and os.environ.get("MA_BENCH_PROFILE"):
            # py-spy writes its samples once the process it watches has exited
            for child in _children(self.popen.pid):
                os.kill(child, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        # waited for: its CPU now shows in our own cutime, no longer under its pid
        if self.popen.pid in self.ctx.pids:
            self.ctx.pids.remove(self.popen.pid)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(each) for each in text.split()]


def worker_settings(ctx: BenchContext, name: str, **more: object) -> Settings:
    """Settings for a ``ma-pipeline worker`` child named ``name``: its own topic prefix, app id,
    chDB engine path (one per process) and data folder, the example rules, RocksDB tables as
    ``ma-pipeline worker`` runs by default, a free API port; ``more`` overrides or adds."""
    scratch: Path = ctx.scratch / name
    return ctx.settings.model_copy(
        update={
            "topic_prefix": f"{ctx.settings.topic_prefix}{name}.",
            "app_id": f"{ctx.settings.app_id}-{name}",
            "clickhouse_url": f"chdb://{scratch / 'chdb'}",
            "data_dir": scratch / "data",
            "config": REPO / "config" / "rules.yaml",
            "store": "rocksdb://",
            "worker_web_port": free_port(),
            "segment_refresh": 3600.0,
            **more,
        }
    )
