"""Keeping the rules current: reload on change, refuse a bad file, keep the last good rules."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.rules.loader import RulesError, load_rules
from pipeline.rules.models import Rules

log = logging.getLogger(__name__)


class RulesWatcher:
    """Holds the rules in force and reloads them when the file changes.

    The file is checked by ``poll()`` (the worker and collector call it about once a second);
    a change is detected by modification time, size and inode. An invalid file is refused with
    its file/line/field messages and the last good rules stay in force.

    Example::

        watcher = RulesWatcher(Path("config/rules.yaml"))
        watcher.rules.scoring.rules
        watcher.poll()  # True when new rules were loaded
    """

    def __init__(self, path: Path, on_error: Callable[[RulesError], None] | None = None) -> None:
        self.path = path
        self.on_error = on_error
        self.last_error: RulesError | None = None
        self.reloads = 0
        self.refusals = 0
        self._stamp = self._current_stamp()
        self.rules: Rules = load_rules(path)  # at start, a bad file is fatal

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> bool:
        """Reload if the file changed; return True when new rules took effect."""
        stamp = self._current_stamp()
        if stamp == self._stamp or stamp is None:
            return False
        self._stamp = stamp
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            self.refusals += 1
            self.last_error = exc
            log.error("rules file refused, the last good rules stay in force:\n%s", exc)
            if self.on_error is not None:
                self.on_error(exc)
            return False
        self.rules = rules
        self.last_error = None
        self.reloads += 1
        log.info("rules reloaded from %s", self.path)
        return True
