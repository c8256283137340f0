"""Event matches: the ``match`` blocks of scoring rules, triggers and segments.

Example::

    match = EventMatch(type="page_view", url="/pricing*")
    match.matches({"type": "page_view", "path": "/pricing/enterprise"})  # True

URL globs match the URL's path (``/pricing*``); a glob starting with ``http`` matches the whole
URL. ``*`` matches any run of characters (``/`` included), ``?`` one character.
"""

from __future__ import annotations

import fnmatch
import re
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _as_list(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    return [value]


class EventMatch(BaseModel):
    """Conditions on one event; every condition given must hold, a list means any of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: list[str] | None = Field(default=None, description="event type(s)")
    url: list[str] | None = Field(default=None, description="URL path glob(s)")
    name: list[str] | None = Field(default=None, description="custom event name(s)")
    campaign: list[str] | None = Field(default=None, description="email campaign id(s)")
    form_id: list[str] | None = Field(default=None, description="form id(s)")

    _normalise = field_validator("type", "url", "name", "campaign", "form_id", mode="before")(
        lambda cls, v: _as_list(v)
    )

    @field_validator("type")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        from pipeline.models.events import BROWSER_TYPES, COLLECTOR_TYPES, SERVER_TYPES

        known = BROWSER_TYPES | SERVER_TYPES | COLLECTOR_TYPES
        for item in value or ():
            if item not in known:
                raise ValueError(f"unknown event type {item!r}; known: {', '.join(sorted(known))}")
        return value

    @cached_property
    def _conditions(self) -> tuple[tuple[tuple[str, tuple[Any, ...]], ...], Any, Any]:
        """What ``matches`` tests, compiled once: (event field, allowed values) for each list
        given, then one regular expression for all path globs and one for all URL globs."""
        fields = (("type", "type"), ("name", "name"), ("campaign", "campaign_id"))
        lists = tuple(
            (key, tuple(allowed))
            for name, key in (*fields, ("form_id", "form_id"))
            if (allowed := getattr(self, name)) is not None
        )

        def one(globs: list[str]) -> Any:
            if not globs:
                return None
            either = "|".join(f"(?:{fnmatch.translate(g.replace('**', '*'))})" for g in globs)
            return re.compile(either).match

        urls = self.url or []
        return (
            lists,
            one([g for g in urls if not g.startswith("http")]),
            one([g for g in urls if g.startswith("http")]),
        )

    def accepts_type(self, kind: str | None) -> bool:
        """Could an event of this type match (its other fields aside)?"""
        return self.type is None or kind in self.type

    def matches(self, event: dict[str, Any]) -> bool:
        """True when the event (a ``ma.events`` value as a dict) meets every condition."""
        lists, path_glob, url_glob = self._conditions
        for key, allowed in lists:
            if event.get(key) not in allowed:
                return False
        if self.url is not None:
            if path_glob is not None and path_glob(event.get("path") or ""):
                return True
            return url_glob is not None and url_glob(event.get("url") or "") is not None
        return True
