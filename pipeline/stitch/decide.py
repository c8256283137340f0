"""The one place that decides whether an event links, re-links or leaves a cookie alone.

Rules (CONTRACT §3):

- evidence is a human ``email_click`` (signed token), or a ``form_submit``/``identify`` with a
  usable email; automated clicks, placeholder emails and garbage ids are never evidence;
- an unlinked cookie is linked by any evidence;
- a linked cookie is re-linked by a form or identify for someone else (a shared computer), but
  not by a click for someone else (a forwarded mail): that click still counts for the token's
  contact;
- a cookie re-linked more than ``max_relinks`` times within ``relink_period`` (a kiosk) is
  unlinked, flagged, and never linked again;
- two contacts are never merged.

Example::

    cookie = Cookie()
    decision = decide(cookie, {"type": "identify", "email": "ana@acme.io", ...}, rules, at_ms)
    decision.action, decision.contact_id   # ('link', '…uuid5 of ana@acme.io…')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pipeline.identity import contact_id_for, email_rejection, normalize_email
from pipeline.rules.models import Identity

Action = Literal["none", "link", "relink", "flag"]


@dataclass
class Cookie:
    """Identity state of one ``anonymous_id``."""

    contact_id: str | None = None
    linked_at: int | None = None
    ever_linked: bool = False  # its anonymous history went to its first contact
    relinks: list[int] = field(default_factory=list)  # epoch ms of recent re-links
    flagged: bool = False  # a kiosk: never linked again
    #: The ``user_id`` whose contact the cookie is linked to by a ``user_id`` call (stage 1
    #: need not ask who it is again), None once other evidence moved the cookie.
    user_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "contact_id": self.contact_id,
            "linked_at": self.linked_at,
            "ever_linked": self.ever_linked,
            "relinks": self.relinks,
            "flagged": self.flagged,
        }
        if self.user_id is not None:
            data["user_id"] = self.user_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Cookie:
        if not data:
            return cls()
        return cls(
            contact_id=data.get("contact_id"),
            linked_at=data.get("linked_at"),
            ever_linked=bool(data.get("ever_linked")),
            relinks=list(data.get("relinks") or ()),
            flagged=bool(data.get("flagged")),
            user_id=data.get("user_id"),
        )


@dataclass(frozen=True)
class Decision:
    """What an event does to its cookie, and whom the event belongs to.

    ``contact_id`` is the contact the event is attributed to (None: anonymous): evidence always
    counts for the person it names, even when the cookie does not move. ``cookie_contact_id`` is
    the cookie's contact afterwards; ``previous_contact_id`` the one it left (re-link, flag);
    ``first_link`` is True when the cookie's anonymous history moves to ``cookie_contact_id``.
    """

    action: Action
    contact_id: str | None
    cookie_contact_id: str | None
    previous_contact_id: str | None = None
    reason: str | None = None
    first_link: bool = False


def evidence_for(event: dict[str, Any]) -> str | None:
    """The contact id an event proves its cookie belongs to, or None."""
    kind = event.get("type")
    if kind == "email_click":
        if event.get("automated"):
            return None
        contact: str | None = event.get("contact_id")
        return contact
    if kind in ("form_submit", "identify"):
        email = event.get("email")
        return _claimed(email) if isinstance(email, str) else None
    return None


def refusal_for(event: dict[str, Any], cookie: Cookie | None = None) -> str | None:
    """Why a form or identify that names someone is not taken as evidence, or None: an email
    no one can be identified by (``invalid email: <why>``), or a cookie flagged as a kiosk
    (``cookie_flagged``). What the console's contact page shows beside the event."""
    if event.get("type") not in ("form_submit", "identify"):
        return None
    email = event.get("email")
    if not isinstance(email, str) or not email.strip():
        return None  # names no one: nothing refused
    why = email_rejection(normalize_email(email))
    if why is not None:
        return f"invalid email: {why}"
    if cookie is not None and cookie.flagged:
        return "cookie_flagged"
    return None


@lru_cache(maxsize=8192)
def _claimed(email: str) -> str | None:
    """The contact id a usable email names; asked several times per event, by both stages."""
    if email_rejection(normalize_email(email)) is not None:
        return None
    return str(contact_id_for(email))


def decide(
    cookie: Cookie,
    event: dict[str, Any],
    rules: Identity,
    at_ms: int,
    claimed: str | None = None,
) -> Decision:
    """Decide, and apply to ``cookie``, what ``event`` does to its identity. ``claimed`` is
    evidence found elsewhere (a ``user_id``'s contact, stage 1's user record): it counts as an
    ``identify`` would, with ``event["type"]`` as the reason."""
    current = cookie.contact_id
    claimed = claimed or evidence_for(event)
    kind = event.get("type")
    # Whom the event belongs to: the person its evidence names (a click counts for its token's
    # contact, a form for whoever typed the email), else the contact a server event names, else
    # the cookie's contact.
    attributed = claimed or event.get("contact_id") or current
    if claimed is None or cookie.flagged or claimed == current:
        return Decision("none", attributed, current)
    if current is None:
        cookie.user_id = None
        first = not cookie.ever_linked
        cookie.contact_id, cookie.linked_at, cookie.ever_linked = claimed, at_ms, True
        return Decision("link", claimed, claimed, None, str(kind), first_link=first)
    if kind == "email_click":  # a forwarded mail: the click counts, the cookie stays
        return Decision("none", claimed, current)
    cookie.user_id = None
    period_ms = int(rules.relink_period.total_seconds() * 1000)
    cookie.relinks = [t for t in cookie.relinks if at_ms - t < period_ms] + [at_ms]
    if len(cookie.relinks) > rules.max_relinks:
        cookie.contact_id, cookie.linked_at, cookie.flagged = None, None, True
        return Decision("flag", claimed, None, current, "cookie_relink_limit")
    cookie.contact_id, cookie.linked_at = claimed, at_ms
    return Decision("relink", claimed, claimed, current, str(kind))
