"""What waits: the delayed triggers a worker holds (``ma-pipeline triggers pending [EMAIL]``).

Read from the worker's state, never reconstructed: a contact's (by email) or, without an email,
every pending trigger of the partitions this worker owns (the keys its due indexes hold), in
due order. Each says its rule, channel, subject, due time, trigger id and what would cancel it
(the rule's ``cancel_if``). With several workers each answers for its own partitions.

Example::

    pending_view(worker, "ana@acme.io")
    # [{"rule": "pricing-trial-offer", "due_at": "2026-03-03T09:05:00Z", "subject": "ana@…",
    #   "cancelled_by": ["form_submit, form_id trial-signup"], ...}]
"""

from __future__ import annotations

from typing import Any

from pipeline.clock import from_millis
from pipeline.identity import contact_id_for
from pipeline.rules import Rules
from pipeline.rules.matching import EventMatch
from pipeline.worker.profiles import Worker

#: the most pending triggers one answer lists
LIMIT = 1000


def describe(match: EventMatch) -> str:
    """An event match in words: ``form_submit, form_id trial-signup``."""
    parts = []
    for field, label in (
        ("type", ""),
        ("url", "url "),
        ("name", "name "),
        ("campaign", "campaign "),
        ("form_id", "form_id "),
    ):
        values = getattr(match, field)
        if values:
            parts.append(label + " or ".join(values))
    return ", ".join(parts) or "any event"


def _listed(
    state: dict[str, Any] | None, subject: str, contact_id: str | None, rules: Rules
) -> list[dict[str, Any]]:
    state = state or {}
    triggers = state.get("triggers") or state.get("profile") or {}
    by_id = {rule.id: rule for rule in rules.triggers.rules}
    listed = []
    for pending in triggers.get("pending") or ():
        rule = by_id.get(pending.get("rule"))
        listed.append(
            {
                "rule": pending.get("rule"),
                "channel": rule.channel if rule is not None else None,
                "subject": subject,
                "contact_id": contact_id,
                "due_at": from_millis(int(pending["due_at"])),
                "trigger_id": pending.get("trigger_id"),
                "cancelled_by": [describe(m) for m in rule.cancel_if] if rule is not None else [],
            }
        )
    return listed


def pending_view(worker: Worker, email: str | None = None) -> list[dict[str, Any]]:
    """The pending delayed triggers of ``email``'s contact, or of every key this worker owns."""
    rules = worker.rules.rules
    if email is not None:
        contact_id = str(contact_id_for(email))
        state = worker.load(worker.contacts, contact_id)
        subject = ((state or {}).get("contact") or {}).get("email") or email
        return sorted(
            _listed(state, subject, contact_id, rules), key=lambda p: (p["due_at"], p["rule"])
        )
    listed: list[dict[str, Any]] = []
    for table, keys in worker.waiting_keys():
        for key in keys:
            if len(listed) >= LIMIT:
                break
            state = worker.load(table, key)
            if table is worker.contacts:
                subject = ((state or {}).get("contact") or {}).get("email") or key
                listed += _listed(state, subject, key, rules)
            else:
                listed += _listed(state, key, None, rules)
    return sorted(listed, key=lambda p: (p["due_at"], p["rule"]))[:LIMIT]
