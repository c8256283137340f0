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
    def _url_patterns(self) -> list[tuple[bool, re.Pattern[str]]]:
        return [
            (glob.startswith("http"), re.compile(fnmatch.translate(glob.replace("**", "*"))))
            for glob in self.url or ()
        ]

    def accepts_type(self, kind: str | None) -> bool:
        """Could an event of this type match (its other fields aside)?"""
        return self.type is None or kind in self.type

    def matches(self, event: dict[str, Any]) -> bool:
        """True when the event (a ``ma.events`` value as a dict) meets every condition."""
        if self.type is not None and event.get("type") not in self.type:
            return False
        if self.name is not None and event.get("name") not in self.name:
            return False
        if self.campaign is not None and event.get("campaign_id") not in self.campaign:
            return False
        if self.form_id is not None and event.get("form_id") not in self.form_id:
            return False
        if self.url is not None:
            path = event.get("path") or ""
            url = event.get("url") or ""
            if not any(p.match(url if whole else path) for whole, p in self._url_patterns):
                return False
        return True
