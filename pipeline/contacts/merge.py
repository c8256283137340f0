"""Merging contact upserts from several sources into one contact, field by field.

Per field, the rules file names a source priority list (``title: [crm, form, import]``: a value
from ``crm`` beats one from ``form``; sources not listed rank last) or ``latest`` (the most
recent value wins). An empty value never overwrites a non-empty one. Consent: the latest
statement wins, except that after an unsubscribe only the person (a ``form`` or ``identify``)
can opt in again — a stale CRM sync cannot re-subscribe someone who clicked "unsubscribe".
``created_at`` keeps the earliest.

Example::

    state = ContactState(contact_id="c1")
    apply_update(state, {"source": "form", "attributes": {"title": "Dev"}, ...}, merge, at_ms=1)
    apply_update(state, {"source": "crm", "attributes": {"title": "CTO"}, ...}, merge, at_ms=2)
    state.attributes["title"]["v"]   # 'CTO'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.clock import from_millis, to_millis
from pipeline.rules.models import Merge

PERSON_SOURCES = frozenset({"form", "identify", "unsubscribe"})
CORE_FIELDS = ("crm_status", "crm_id")


def is_empty(value: Any) -> bool:
    """None, blank (or whitespace-only) text, an empty list or mapping."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == [] or value == {}


@dataclass
class ContactState:
    """A merged contact with, per field, its value, source and time."""

    contact_id: str
    email: str | None = None
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # field → {v, src, at}
    consent_email: bool = False
    consent_at: int = 0
    opted_out: bool = False
    email_blocked: str | None = None  # "hard_bounce" stops email triggers
    created_at: int | None = None
    updated_at: int = 0

    def value(self, name: str) -> Any:
        entry = self.attributes.get(name)
        return entry["v"] if entry else None

    def plain_attributes(self) -> dict[str, Any]:
        return {k: e["v"] for k, e in self.attributes.items() if k not in CORE_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContactState:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def published(self) -> dict[str, Any]:
        """The ``ma.contacts`` value (``pipeline.models.Contact``)."""
        return {
            "contact_id": self.contact_id,
            "email": self.email,
            "attributes": self.plain_attributes(),
            "consent_email": self.consent_email,
            "crm_status": self.value("crm_status"),
            "crm_id": self.value("crm_id"),
            "created_at": from_millis(self.created_at) if self.created_at else None,
            "updated_at": from_millis(self.updated_at),
            "field_sources": {k: e["src"] for k, e in self.attributes.items()},
            "deleted": False,
        }


_FIELDS = set(ContactState.__dataclass_fields__)


def _wins(policy: Any, old: dict[str, Any] | None, source: str, at_ms: int) -> bool:
    if old is None:
        return True
    if policy == "latest" or source == old["src"]:
        return bool(at_ms >= old["at"])
    ranks = list(policy)
    new_rank = ranks.index(source) if source in ranks else len(ranks)
    old_rank = ranks.index(old["src"]) if old["src"] in ranks else len(ranks)
    return new_rank < old_rank or (new_rank == old_rank and at_ms >= old["at"])


def apply_update(state: ContactState, update: dict[str, Any], merge: Merge, at_ms: int) -> bool:
    """Merge one ``ma.contact-updates`` value into ``state``; True when anything changed."""
    source = str(update.get("source") or "unknown")
    changed = False
    if update.get("email") and state.email != update["email"]:
        state.email = update["email"]
        changed = True
    fields = dict(update.get("attributes") or {})
    for name in CORE_FIELDS:
        if update.get(name) is not None:
            fields[name] = update[name]
    for name, value in fields.items():
        if is_empty(value):
            continue  # an empty value never overwrites (and alone never sets) a field
        old = state.attributes.get(name)
        if _wins(merge.policy(name), old, source, at_ms):
            # The same value from a winning source still takes the field over: a later
            # lower-ranked update must not replace what a higher-ranked source confirmed.
            changed |= old is None or old["v"] != value or old["src"] != source
            state.attributes[name] = {"v": value, "src": source, "at": at_ms}
    consent = update.get("consent_email")
    if consent is not None:
        changed |= set_consent(state, bool(consent), source, at_ms)
    created = update.get("created_at")
    if created is not None:
        created_ms = _millis(created)
        if state.created_at is None or created_ms < state.created_at:
            state.created_at = created_ms
            changed = True
    if state.created_at is None:
        state.created_at = at_ms
        changed = True
    if changed:
        state.updated_at = max(state.updated_at, at_ms)
    return changed


def _millis(value: Any) -> int:
    """Epoch ms of a datetime, epoch ms, or ISO-8601 text (a datetime after a JSON round trip)."""
    if isinstance(value, datetime):
        return to_millis(value)
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_millis(parsed)


def set_consent(state: ContactState, consent: bool, source: str, at_ms: int) -> bool:
    """Record a consent statement; see the module docstring for who may opt someone back in."""
    if at_ms < state.consent_at:
        return False  # an older statement than the one in force
    if consent and state.opted_out and source not in PERSON_SOURCES:
        return False
    changed = state.consent_email != consent
    state.consent_email = consent
    state.consent_at = at_ms
    if source == "unsubscribe":
        state.opted_out = True
    elif consent:
        state.opted_out = False
    if changed:
        state.updated_at = max(state.updated_at, at_ms)
    return changed
