"""The one clock. Everything that asks "what time is it" goes through here, so tests control time.

Example::

    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(days=1))
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time, optionally shifted by a fixed offset (``MA_CLOCK_OFFSET``)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class FileClock:
    """Wall-clock time shifted by the number of seconds written in a file (``MA_CLOCK_FILE``).

    Lets tests (and demos) move a running pipeline through days: every process pointed at the
    same file sees the same shifted time. A missing or unreadable file means no shift.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = timedelta(0)
        self._checked = 0.0

    def now(self) -> datetime:
        moment = time.monotonic()
        if moment - self._checked > 0.05:
            self._checked = moment
            try:
                self._offset = timedelta(seconds=float(self.path.read_text().strip() or 0))
            except (OSError, ValueError):
                self._offset = timedelta(0)
        return datetime.now(UTC) + self._offset

    def shift(self, by: timedelta) -> None:
        """Move time forward by ``by`` for every process reading this file."""
        current = self._offset.total_seconds()
        with contextlib.suppress(OSError, ValueError):
            current = float(self.path.read_text().strip() or 0)
        self.path.write_text(str(current + by.total_seconds()))
        self._checked = 0.0


class FrozenClock:
    """A clock that only moves when told to; for unit tests."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at

    def advance(self, by: timedelta) -> None:
        self._at += by


def to_millis(at: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(at.timestamp() * 1000)


def from_millis(ms: int | float) -> datetime:
    """Aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def monotonic() -> float:
    """Seconds from a monotonic clock, for measuring durations (never for event time)."""
    return time.monotonic()
