"""The bench's CPU meter: other processes' share apart from the hypervisor's (steal)."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench import report
from bench.report import CpuMeter, _cpu_shares


def test_cpu_shares_reads_steal_from_the_eighth_field() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    fields = [100, 0, 20, 50, 10, 0, 5, 15, 7, 0]
    total, busy, steal, ours = _cpu_shares(fields, 42)
    assert total == 200  # guest time is counted in user already
    assert busy == 140  # all but idle and iowait
    assert steal == 15
    assert ours == 42


def test_cpu_shares_without_a_steal_field() -> None:
    assert _cpu_shares([10, 0, 5, 80, 5], 0) == (100, 15, 0, 0)


def test_meter_keeps_steal_out_of_the_other_processes_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = iter(
        [
            "cpu  1000 0 100 5000 0 0 0 0 0 0\n",
            # 1,000 ticks later: 300 ours, 200 stolen, 100 by other processes, 400 idle
            "cpu  1400 0 100 5400 0 0 0 200 0 0\n",
        ]
    )
    ticks = iter([50, 350])
    monkeypatch.setattr(report.Path, "read_text", lambda self: next(lines))
    monkeypatch.setattr(report, "_process_ticks", lambda pid: next(ticks))
    meter = CpuMeter()
    meter.start()
    assert meter.stop() == 0.1
    assert meter.steal == 0.2


def test_the_table_warns_of_busy_cpus_and_of_steal() -> None:
    machine = {
        "timestamp": "2026-12-08T00:00:00Z",
        "git_commit": "abc",
        "cpu_count": 2,
        "cpu_model": "AMD EPYC",
        "python": "3.11",
        "kafka_version": "4.1.1",
        "chdb_version": "3",
    }
    results = report.Results(machine, {})
    busy = results.section("worker")
    busy.others_cpu, busy.steal = 0.3, 0.05
    quiet = results.section("sink")
    quiet.others_cpu, quiet.steal = 0.0, 0.01
    console = Console(record=True, width=300)
    results.print(console)
    text = console.export_text()
    assert "other processes used the CPUs during the run (worker 30% of 2 CPUs)" in text
    assert "the hypervisor took CPU time from this machine (worker 5%)" in text
    assert "sink 0%" not in text and "sink 1%" not in text
    assert results.as_dict()["sections"]["worker"]["steal"] == 0.05
