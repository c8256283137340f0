"""Contacts: field-level merging of upserts from several sources (CONTRACT §5, merge rules)."""

from pipeline.contacts.merge import ContactState, apply_update, is_empty

__all__ = ["ContactState", "apply_update", "is_empty"]
