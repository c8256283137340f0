"""Logging set-up shared by every command: one line per record, level from ``MA_LOG_LEVEL``.

While the broker is away, aiokafka logs the same error several times a second per connection
(about 900 lines in a 10 s outage of one worker). ``RepeatFilter`` keeps the first of each kind
and then one line per ``window`` that says how many it held back.

Example::

    configure("info")   # what every ma-pipeline command does first
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

#: aiokafka's loggers that log per retry while a broker is unreachable (its client module logs
#: as "aiokafka"; a filter on a logger does not see its children's records).
AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "aiokafka.admin.client",
)


class RepeatFilter(logging.Filter):
    """Passes the first record of each kind (logger, level, message template), holds back the
    like ones that follow within ``window`` seconds, and adds to the next one it passes how
    many it held back."""

    MAX_KINDS = 1000  # templates are few; texts formatted before logging could be many

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window = window
        self.clock = clock
        self._kinds: dict[tuple[str, int, object], list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, record.msg)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.window:
            seen[1] += 1
            return False
        if len(self._kinds) >= self.MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = [now, 0]
        held = int(seen[1]) if seen is not None else 0
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this in {self.window:g} s)"
            record.args = ()  # (None would reach mode's formatter as (None,))
        return True


def configure(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    quiet_libraries(level)
    if level.lower() != "debug":
        for name in AIOKAFKA_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RepeatFilter) for f in logger.filters):
                logger.addFilter(RepeatFilter())


def quiet_libraries(level: str) -> None:
    """Faust, mode and aiokafka are chatty at INFO (every service starting, each partition
    opened, a recovery table of every changelog partition); they speak at WARNING unless
    MA_LOG_LEVEL=debug, which shows their INFO (rebalances, assignments, recovery)."""
    noisy_level = logging.INFO if level.lower() == "debug" else logging.WARNING
    for noisy in ("aiokafka", "kafka", "faust", "mode", *FAUST_SUBCLASS_MODULES):
        logging.getLogger(noisy).setLevel(noisy_level)


#: Modules whose classes extend Faust's services (consumer, table manager, recovery, stores):
#: mode names a service's logger after its class's module, so Faust's own INFO lines (each
#: service starting, every partition opened, the recovery tables) log under these names.
FAUST_SUBCLASS_MODULES = ("pipeline.worker.faust_fixes", "pipeline.worker.store")


@contextlib.contextmanager
def quiet(name: str) -> Iterator[None]:
    """Silence logger ``name`` for a moment: a command that reports a failure in one line
    (``pipeline.errors``) does not also print the library's own log of it."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
