"""Identity decisions: the value of ``ma.identities``, the audit trail of every link."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipeline.models.types import UtcDatetime

IdentityReason = Literal[
    "email_click",  # linked by a signed email link
    "form_submit",  # linked or re-linked by a form with an email
    "identify",  # linked or re-linked by ma.identify(email)
    "cookie_relink_limit",  # re-linked too often (kiosk, shared PC): unlinked and flagged
    "contact_cookie_limit",  # the contact holds too many cookies: its oldest one is unlinked
    "forget",  # the contact was erased
]


class IdentityDecision(BaseModel):
    """One link, re-link or unlink of an ``anonymous_id``.

    A link has ``previous_contact_id`` null, a re-link names the contact the cookie left, an
    unlink (fan-in limits, erasure) has ``contact_id`` null.
    """

    anonymous_id: str
    contact_id: str | None
    previous_contact_id: str | None = None
    reason: IdentityReason
    event_id: str | None = Field(description="the event that caused the decision")
    at: UtcDatetime
