"""Logging set-up shared by every command: one line per record, level from ``MA_LOG_LEVEL``."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Faust and aiokafka are chatty at INFO; they speak at WARNING unless MA_LOG_LEVEL=debug,
    # which shows their INFO (rebalances, assignments, recovery).
    noisy_level = logging.INFO if level.lower() == "debug" else logging.WARNING
    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(noisy_level)
