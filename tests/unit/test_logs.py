"""Logging set-up: aiokafka's per-retry errors during a broker outage are summarised."""

from __future__ import annotations

import logging

import pytest

from pipeline.logs import AIOKAFKA_LOGGERS, RepeatFilter, configure


def record(msg: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_like_records_are_held_back_for_a_window_then_counted() -> None:
    now = [0.0]
    repeats = RepeatFilter(window=10, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"

    assert repeats.filter(record(template, 1, "refused"))
    for step in range(1, 50):  # every 0.2 s for 10 s
        now[0] = step * 0.2
        assert not repeats.filter(record(template, 1, "refused"))
    now[0] = 10.0
    summary = record(template, 1, "refused")
    assert repeats.filter(summary)
    assert summary.getMessage() == (
        "Unable connect to node with id 1: refused (49 more like this in 10 s)"
    )


def test_other_kinds_pass_and_a_lone_record_is_unchanged() -> None:
    now = [0.0]
    repeats = RepeatFilter(window=10, clock=lambda: now[0])
    assert repeats.filter(record("Unable to update metadata from %s", [1]))
    assert repeats.filter(record("Failed fetch messages from %s: %s", 1, "not ready"))
    assert repeats.filter(record("Unable to update metadata from %s", [1], name="aiokafka.conn"))
    now[0] = 60.0
    again = record("Unable to update metadata from %s", [1])
    assert repeats.filter(again)
    assert again.getMessage() == "Unable to update metadata from [1]"


@pytest.mark.parametrize(("level", "filtered"), [("info", True), ("debug", False)])
def test_configure_installs_the_filter_once_unless_debugging(level: str, filtered: bool) -> None:
    for name in AIOKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, RepeatFilter)]
    configure(level)
    configure(level)
    for name in AIOKAFKA_LOGGERS:
        installed = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatFilter)]
        assert len(installed) == (1 if filtered else 0)


def test_a_summarised_record_formats_under_modes_formatter() -> None:
    """Faust's workers log through mode's ExtensionFormatter, which turns ``args=None`` into
    ``(None,)`` and then fails on ``msg % (None,)`` (seen as a "--- Logging error ---")."""
    import logging

    from mode.utils.logging import ExtensionFormatter

    from pipeline.logs import RepeatFilter

    summarise = RepeatFilter(window=10.0, clock=lambda: 0.0)
    records = [
        logging.LogRecord("aiokafka", logging.WARNING, "f", 1, "failed for %s", ("g",), None)
        for _ in range(3)
    ]
    kept = [r for r in records if summarise.filter(r)]
    summarise.clock = lambda: 11.0
    again = logging.LogRecord("aiokafka", logging.WARNING, "f", 1, "failed for %s", ("g",), None)
    assert summarise.filter(again)
    assert len(kept) == 1
    assert ExtensionFormatter().format(again).endswith("failed for g (2 more like this in 10 s)")
