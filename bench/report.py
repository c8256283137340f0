"""Benchmark results: sections of rows, ratios against baselines of the same run, the machine.

A row is one figure: ``{name, value, unit, baseline?, ratio?, note, samples?}``. ``baseline``
names another row of the same run (any section) and ``ratio`` is ``value / baseline value``, so
a later figure reads as "the collector reaches 0.41 x raw aiokafka produce" rather than as an
absolute number that drifts with whatever else the shared machine is doing.

Example::

    results = Results(machine_info(kafka_version="4.1.1"))
    out = results.section("baselines")
    out.add("kafka.produce", Measurement([41e3, 40e3, 43e3]), "msgs/s", note="send()")
    results.section("collector").add("collector.batch", 17e3, "msgs/s", baseline="kafka.produce")
    results.write(Path("bench/results.json"))
    results.print()
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Measurement:
    """Repeated measurements of one figure; the row shows their median."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the runs disagreed."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median else 0.0


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: str | None = None
    ratio: float | None = None
    note: str = ""
    samples: list[float] | None = None
    #: More figures of the same measurement (latency percentiles, CPU used...), JSON only.
    extra: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.baseline is not None:
            row["baseline"] = self.baseline
            row["ratio"] = self.ratio
        row["note"] = self.note
        if self.samples is not None:
            row["samples"] = self.samples
        if self.extra:
            row["extra"] = self.extra
        return row


@dataclass
class Section:
    """The rows of one benchmark section, e.g. ``baselines`` or ``collector``."""

    name: str
    results: Results
    rows: list[Row] = field(default_factory=list)
    seconds: float | None = None
    #: Share of all CPUs that processes other than this run's used while the section ran.
    others_cpu: float | None = None
    #: Share of all CPU time the hypervisor took meanwhile (steal; not in ``others_cpu``).
    steal: float | None = None
    error: str | None = None

    def add(
        self,
        name: str,
        value: float | Measurement,
        unit: str,
        *,
        baseline: str | None = None,
        note: str = "",
        extra: dict[str, Any] | None = None,
    ) -> Row:
        """Record a figure; ``baseline`` names a row measured earlier in this run; ``extra``
        holds further figures of the same measurement (written to the JSON, not the table)."""
        if self.results.find(name) is not None:
            raise ValueError(f"bench row {name!r} recorded twice; row names are unique per run")
        samples = value.samples if isinstance(value, Measurement) else None
        number = value.median if isinstance(value, Measurement) else float(value)
        ratio = None
        if baseline is not None:
            base = self.results.find(baseline)
            if base is None:
                note = f"{note}; baseline {baseline} not measured in this run".lstrip("; ")
            elif base.value:
                ratio = number / base.value
        row = Row(name, number, unit, baseline, ratio, note, samples, extra)
        self.rows.append(row)
        return row

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seconds": self.seconds,
            "others_cpu": self.others_cpu,
            "steal": self.steal,
            "rows": [r.as_dict() for r in self.rows],
        }
        if self.error:
            data["error"] = self.error
        return data


class Results:
    """Everything one ``python -m bench`` run measured, and on what."""

    def __init__(self, machine: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        self.machine = machine
        self.options = options or {}
        self.sections: dict[str, Section] = {}

    def section(self, name: str) -> Section:
        if name not in self.sections:
            self.sections[name] = Section(name, self)
        return self.sections[name]

    def find(self, name: str) -> Row | None:
        for section in self.sections.values():
            for row in section.rows:
                if row.name == name:
                    return row
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "options": self.options,
            "sections": {name: s.as_dict() for name, s in self.sections.items()},
        }

    def write(self, path: Path) -> None:
        """Write the JSON atomically (a half-written results file would mislead)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        m = self.machine
        console.print(
            f"[bold]ma-pipeline bench[/] {m['timestamp']}  commit {m['git_commit']}"
            f"{' (dirty)' if m.get('git_dirty') else ''}  {m['cpu_count']} CPU {m['cpu_model']}  "
            f"busy before {_percent(m.get('cpu_busy_start'))}  Python {m['python']}  "
            f"Kafka {m['kafka_version']}  chDB {m['chdb_version']}"
        )
        table = Table(show_lines=False, header_style="bold")
        table.add_column("section", no_wrap=True)
        table.add_column("figure", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("unit", no_wrap=True)
        table.add_column("spread", justify="right", no_wrap=True)
        table.add_column("vs baseline", justify="right", no_wrap=True)
        table.add_column("note")
        for section in self.sections.values():
            if section.error:
                table.add_row(section.name, "[red]failed[/]", "", "", "", "", section.error[:120])
            for row in section.rows:
                spread = ""
                if row.samples and len(row.samples) > 1:
                    spread = f"{Measurement(row.samples).spread:.0%}"
                ratio = f"{row.ratio:.2f} x {row.baseline}" if row.ratio is not None else ""
                table.add_row(
                    section.name, row.name, _number(row.value), row.unit, spread, ratio, row.note
                )
        console.print(table)
        warnings = (
            # (the section's share, above which it is worth a warning, what it means)
            ("others_cpu", 0.1, "other processes used the CPUs during the run ({} of "
             f"{m['cpu_count']} CPUs): absolute figures are low and noisy; compare ratios, "
             "or run again when the machine is quiet"),
            ("steal", 0.02, "the hypervisor took CPU time from this machine ({}): every "
             "process ran slower by about that much, unevenly; ratios of samples taken at "
             "different moments are noisier"),
        )  # fmt: skip
        for share, above, meaning in warnings:
            listed = [
                f"{name} {value:.0%}"
                for name, section in self.sections.items()
                if (value := getattr(section, share)) is not None and value > above
            ]
            if listed:
                console.print(f"[yellow]{meaning.format(', '.join(listed))}[/]")


def _percent(share: float | None) -> str:
    return "?" if share is None else f"{share:.0%}"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def machine_info(kafka_version: str | None = None) -> dict[str, Any]:
    """What the figures were measured on: they only compare within one machine and run.
    Call it before starting anything, so ``cpu_busy_start`` measures other people's work."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "load_avg_start": _load(),
        "cpu_busy_start": cpu_busy(),
        "python": platform.python_version(),
        "kafka_version": kafka_version or "external (MA_KAFKA_BOOTSTRAP)",
        "chdb_version": _version("chdb"),
        "chdb_core_version": _version("chdb-core"),
        "clickhouse_connect_version": _version("clickhouse-connect"),
        "aiokafka_version": _version("aiokafka"),
        "faust_version": _version("faust-streaming"),
    }


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat): others' work before a run."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return round(1 - (idle1 - idle0) / total, 2) if total > 0 else None


class CpuMeter:
    """How much CPU processes other than ours used between ``start()`` and ``stop()``, and how
    much the hypervisor took (steal: time a virtual CPU wanted to run and the host ran
    something else, which slows every process of the run alike).

    Ours = this process (all its threads, chDB's included) and its children it has waited for
    (``wrk``, workers a section started and stopped), plus ``pids`` still running (e.g. the
    broker). ``stop()`` returns the others' share of all CPUs and sets ``steal``, both from
    /proc (``None`` where there is no /proc)."""

    def __init__(self, pids: Callable[[], list[int]] = list) -> None:
        self.pids = pids
        self._start: tuple[int, int, int, int] | None = None
        self.steal: float | None = None

    def _sample(self) -> tuple[int, int, int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            ours = sum(_process_ticks(pid) for pid in ["self", *map(str, self.pids())])
        except (OSError, ValueError, IndexError):
            return None
        return _cpu_shares(fields, ours)

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        total, busy, steal, ours = (b - a for a, b in zip(self._start, end, strict=True))
        if total <= 0:
            return None
        self.steal = round(steal / total, 3)
        return round(max(busy - steal - ours, 0) / total, 2)


def _cpu_shares(fields: list[int], ours: int) -> tuple[int, int, int, int]:
    """From /proc/stat's ``cpu`` line (user nice system idle iowait irq softirq steal …):
    (all ticks, busy ticks, steal ticks, ``ours``). Guest time is already counted in user."""
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total, total - fields[3] - fields[4], steal, ours


def _process_ticks(pid: str) -> int:
    """utime + stime of a process (all threads), in clock ticks; 0 if it is gone. For
    ``self``, also cutime + cstime: children that exited and were waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    ticks = int(fields[11]) + int(fields[12])
    if pid == "self":
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
