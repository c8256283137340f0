"""The worker's ``Monitor`` (``pipeline.worker.faust_fixes``) is Faust's minus the four
per-message statistics calls: if Faust renames or reshapes one of them, the override no
longer replaces anything and this fails."""

from __future__ import annotations

import inspect

from faust.sensors import Monitor as FaustMonitor
from faust.sensors.base import Sensor

from pipeline.worker.faust_fixes import PER_MESSAGE_HOOKS, Monitor


def test_it_overrides_faust_monitors_per_message_hooks_exactly() -> None:
    for name in PER_MESSAGE_HOOKS:
        theirs = getattr(FaustMonitor, name)
        assert theirs is not getattr(Sensor, name), f"Faust's Monitor no longer defines {name}"
        ours = getattr(Monitor, name)
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name


def test_everything_else_is_faust_monitors() -> None:
    # (mode's services add a logger and abc its cache to every class)
    own = {name for name in vars(Monitor) if not name.startswith("_") and name != "logger"}
    assert own == set(PER_MESSAGE_HOOKS)


def test_the_hooks_keep_no_statistics() -> None:
    monitor = Monitor()
    monitor.on_message_in(None, 1, None)
    state = monitor.on_stream_event_in(None, 1, None, None)
    monitor.on_stream_event_out(None, 1, None, None, state)
    monitor.on_message_out(None, 1, None)
    assert (monitor.messages_received_total, monitor.events_total) == (0, 0)
    assert monitor.events_runtime == type(monitor.events_runtime)()
