"""``make bench``: throughput figures of the pipeline, each next to a raw baseline of the same run.

A section is one decorated function; ``python -m bench`` runs the registered sections in order
(baselines first: later sections compare against them) against one Kafka broker and one chDB
engine path, then writes ``bench/results.json`` and prints a table. See ``bench/README.md``.

Example, a new section in ``bench/collector.py`` (and its module named in
``bench.__main__.SECTION_MODULES``)::

    @section("collector", requires=("baselines",))
    async def collector(ctx: BenchContext, out: Section) -> None:
        rate = await repeat(lambda run: post_batches(ctx, n=ctx.scale(50_000, 5_000)))
        out.add("collector.batch", rate, "events/s", baseline="kafka.produce")
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.report import Measurement, Results, Section
from pipeline.settings import Settings

__all__ = [
    "SECTIONS",
    "BenchContext",
    "BenchSection",
    "Measurement",
    "Section",
    "Timer",
    "progress",
    "repeat",
    "section",
]


@dataclass
class BenchContext:
    """What every section gets.

    ``settings`` points at the run's broker (``kafka_bootstrap`` is always set), carries a topic
    prefix unique to the run, and a ``chdb://`` URL shared by all sections: chDB allows one
    engine path per process, so sections use their own *database* on it, never another path.
    """

    settings: Settings
    quick: bool
    scratch: Path
    results: Results
    #: Topics a section created; deleted at the end when the broker is not our own.
    created_topics: list[str] = field(default_factory=list)
    #: Processes this run started (the broker, later sections' workers): their CPU use is ours,
    #: not interference, when ``Section.others_cpu`` is measured.
    pids: list[int] = field(default_factory=list)

    def scale(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def log(self, message: str) -> None:
        progress(message)


SectionFn = Callable[[BenchContext, Section], Awaitable[None] | None]


@dataclass(frozen=True)
class BenchSection:
    name: str
    run: SectionFn
    requires: tuple[str, ...] = ()
    description: str = ""


#: Every registered section, in registration (= run) order.
SECTIONS: list[BenchSection] = []


def section(name: str, *, requires: tuple[str, ...] = ()) -> Callable[[SectionFn], SectionFn]:
    """Register a section; ``requires`` sections are run first, even under ``--only``."""

    def register(fn: SectionFn) -> SectionFn:
        if any(s.name == name for s in SECTIONS):
            raise ValueError(f"bench section {name!r} registered twice")
        doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        SECTIONS.append(BenchSection(name, fn, requires, doc))
        return fn

    return register


async def repeat(
    measure: Callable[[int], Awaitable[float] | float], *, runs: int = 3, warmup: int = 1
) -> Measurement:
    """Call ``measure(i)`` ``warmup`` times (i < 0, discarded), then ``runs`` times (i = 0…);
    each call returns the figure of that run (e.g. msgs/s). The row shows the median."""
    samples = []
    for i in range(-warmup, runs):
        value = measure(i)
        if inspect.isawaitable(value):
            value = await value
        if i >= 0:
            samples.append(float(value))
    return Measurement(samples)


_STDERR = Console(stderr=True)


def progress(message: str) -> None:
    """A progress line on stderr (the results table goes to stdout)."""
    _STDERR.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


class Timer:
    """``with Timer() as t: …`` then ``t.seconds``; ``perf_counter`` based."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
