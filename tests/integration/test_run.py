"""``ma-pipeline run`` (what ``make run`` starts): its own local broker, the worker and the
collector in one command, on the embedded defaults; an event posted to the collector reaches
ClickHouse and ``ma-pipeline query`` reads it while the pipeline runs; Ctrl-C stops everything,
the broker included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def wait_for(log: Path, needle: str, popen: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in log.read_text(errors="replace"):
        assert popen.poll() is None, f"run exited ({popen.returncode}):\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def run_env(tmp_path: Path, http_port: int, worker_port: int) -> dict[str, str]:
    """The environment of a ``ma-pipeline run`` of its own: data in ``tmp_path``, free ports,
    the example rules, nothing of the caller's ``MA_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MA_")}
    return env | {
        "MA_DATA_DIR": str(tmp_path / "data"),
        "MA_CACHE_DIR": str(REPO / ".cache"),
        "MA_CLICKHOUSE_URL": f"chdb://{tmp_path / 'data' / 'clickhouse'}",
        "MA_BROKER_PORT": str(free_port()),
        "MA_BROKER_CONTROLLER_PORT": str(free_port()),
        "MA_HTTP_PORT": str(http_port),
        "MA_WORKER_WEB_PORT": str(worker_port),
        "MA_CONFIG": str(REPO / "config" / "rules.yaml"),
        "MA_SEGMENT_REFRESH": "2",
        "PYTHONUNBUFFERED": "1",
    }


def test_run_starts_broker_worker_and_collector_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    http_port, worker_port = free_port(), free_port()
    env = run_env(tmp_path, http_port, worker_port)
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run"], cwd=REPO,
                                 env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    try:
        wait_for(log, "ma-pipeline: ready: Ctrl-C stops everything.", popen, timeout=180)
        text = log.read_text()
        # the URLs once they answer, then the ready line, last
        assert f"collector  http://127.0.0.1:{http_port}" in text
        assert text.index("collector listening") < text.index("collector  http://127.0.0.1")
        assert "broker     127.0.0.1:" in text and "local KRaft" in text
        # a quiet start: none of Faust's per-service, per-partition and recovery-table lines
        for chatter in ("Starting...", "opening partition", "Highwater", "Recovery"):
            assert chatter not in text, (chatter, text[-4000:])
        assert len(text.splitlines()) < 20, text
        assert cli(env, "broker", "status").returncode == 0
        # a second run in the same folder is told so, in one line (not that a port is taken)
        second = cli(env, "run")
        assert second.returncode == 1, second.stdout + second.stderr
        lines = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and "data folder" in lines[0], second.stderr
        assert "in use by ma-pipeline run (pid " in lines[0] and "Traceback" not in second.stderr

        aid, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        view = {"event_id": event_id, "type": "page_view", "anonymous_id": aid,
                "url": "https://www.acme.example/pricing",
                "ts": int(time.time() * 1000)}  # fmt: skip
        body = {"site_id": "acme", "write_key": "wk_acme_public_7d1f3a", "events": [view]}
        response = urllib3.request("POST", f"http://127.0.0.1:{http_port}/v1/batch",
                                   body=orjson.dumps(body), timeout=10)  # fmt: skip
        assert response.status == 200, response.data
        assert orjson.loads(response.data) == {"accepted": 1, "rejected": []}

        # analysts query the embedded ClickHouse while the pipeline runs (through the worker)
        deadline = time.monotonic() + 60
        while True:
            query = cli(env, "query", f"SELECT path FROM events WHERE event_id = '{event_id}'")
            if query.returncode == 0 and "/pricing" in query.stdout:
                break
            assert time.monotonic() < deadline, f"{query.stdout}\n{query.stderr}"
            time.sleep(1)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole group
        try:
            returncode = popen.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            raise
    text = log.read_text()
    assert returncode == 0, text[-4000:]
    assert "stopping the local broker" in text and "stopped." in text
    assert "Traceback" not in text, text[-4000:]
    status = cli(env, "broker", "status")
    assert status.returncode == 1 and status.stdout.startswith("broker stopped")
