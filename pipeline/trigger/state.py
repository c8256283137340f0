"""What the trigger rules remember of one subject (a cookie or a contact), apart from its score.

Owned by ``pipeline.trigger``: the worker keeps it beside the score profile in each key's state
(``"triggers"``), and hands a cookie's to its contact on the first link (``absorb``).

Example::

    state = TriggerState()
    outcome = on_event(state, subject, event, rules.triggers, at_ms, score=12.0)
    state.pending      # delayed triggers waiting for their time
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_COUNT_ENTRIES = 200


@dataclass
class TriggerState:
    counts: dict[str, list[list[Any]]] = field(default_factory=dict)  # count rule → [[ms, id]]
    # identified-only event rule → [[ms, id], …] of an anonymous cookie's matching events,
    # which count for the contact on the cookie's first link (``decide.on_history``)
    matches: dict[str, list[list[Any]]] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)  # rule → last occurrence ms
    sent: dict[str, list[int]] = field(default_factory=dict)  # channel → fired ms
    cancel_seen: dict[str, int] = field(default_factory=dict)  # rule → last cancel match ms
    pending: list[dict[str, Any]] = field(default_factory=list)  # delayed triggers
    web: list[dict[str, Any]] = field(default_factory=list)  # active web triggers

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TriggerState:
        """Also reads state written when these fields lived in the score profile."""
        if not data:
            return cls()
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def absorb(self, anonymous: TriggerState) -> None:
        """A cookie's first link: its counters and cancel matches join the contact's (its
        anonymous-only pending and web triggers stay behind: those rules do not apply to an
        identified contact; its matches are read by ``decide.on_history``)."""
        for rule_id, entries in anonymous.counts.items():
            merged = {entry[1]: entry for entry in self.counts.get(rule_id, [])}
            merged.update({entry[1]: entry for entry in entries})
            self.counts[rule_id] = sorted(merged.values())[-MAX_COUNT_ENTRIES:]
        for rule_id, at in anonymous.cancel_seen.items():
            self.cancel_seen[rule_id] = max(at, self.cancel_seen.get(rule_id, 0))

    def next_due(self) -> int | None:
        return min((p["due_at"] for p in self.pending), default=None)


_FIELDS = tuple(TriggerState.__dataclass_fields__)
