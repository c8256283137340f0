"""The README's first scenario, run as a newcomer runs it (issue #18): its shell block is taken
from README.md as it stands, run with bash against ``ma-pipeline run`` (what ``make run``
starts), and every output the README shows (``# → …`` lines) must be what the commands print.
The only change to the commands is the collector's port (``localhost:8080`` → a free port), so
that the test runs beside anything else on this machine.

Steps 1–3 run in one shell, as typed. Step 4 reads what the pipeline made of them; a person
types it some seconds later, so it is run again until its output is the README's (or 90 s).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.integration.test_run import run_env, wait_for

pytestmark = pytest.mark.integration

ARROW = "# → "


def scenario() -> list[tuple[str, str, list[str]]]:
    """The first scenario's steps: (title, shell text, the outputs the README shows)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## A first scenario") :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("\n```")]
    steps: list[tuple[str, str, list[str]]] = []
    for chunk in re.split(r"\n(?=# \d+\. )", block.strip()):
        title = chunk.splitlines()[0]
        expected = [line[len(ARROW) :] for line in chunk.splitlines() if line.startswith(ARROW)]
        steps.append((title, chunk, expected))
    return steps


def test_the_readme_scenario_has_four_steps_each_with_its_output() -> None:
    steps = scenario()
    assert [title.split(".")[0] for title, _, _ in steps] == ["# 1", "# 2", "# 3", "# 4"]
    assert all(expected for _, _, expected in steps), [t for t, _, e in steps if not e]


def test_the_first_scenario_works_as_written(tmp_path: Path) -> None:
    http_port, worker_port = free_port(), free_port()
    env = run_env(tmp_path, http_port, worker_port) | {
        "MA_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        # `. .venv/bin/activate`: ma-pipeline on the PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path / "run.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run"], cwd=tmp_path,
                                 env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    try:
        wait_for(log, "ma-pipeline: ready: Ctrl-C stops everything.", popen, timeout=180)
        steps = scenario()

        def shell(text: str) -> str:
            text = text.replace("localhost:8080", f"localhost:{http_port}")
            done = subprocess.run(["bash", "-e", "-c", text], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, (
                f"{text}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
            return done.stdout

        first = "\n".join(chunk for _, chunk, _ in steps[:3])
        printed = shell(first).splitlines()
        assert printed == [line for _, _, expected in steps[:3] for line in expected]

        _, chunk, expected = steps[3]
        deadline = time.monotonic() + 90
        while True:
            got = shell(chunk).splitlines()
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert got == expected, "\n".join(got)
    finally:
        os.killpg(popen.pid, signal.SIGINT)
        try:
            popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
