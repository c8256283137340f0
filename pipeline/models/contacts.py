"""Contacts: CRM upserts in (``POST /v1/contacts``), raw updates and merged contacts on topics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.models.types import EmailText, Properties, ShortText, UtcDatetime

MAX_CONTACTS_PER_REQUEST = 1000


class ContactUpsert(BaseModel):
    """One contact of a ``POST /v1/contacts`` body or a row of ``contacts import``."""

    model_config = ConfigDict(extra="ignore")

    email: EmailText
    attributes: Properties
    consent_email: bool | None = None
    crm_status: ShortText | None = None
    crm_id: ShortText | None = None
    created_at: UtcDatetime | None = None


class ContactsRequest(BaseModel):
    """The body of ``POST /v1/contacts``."""

    model_config = ConfigDict(extra="ignore")

    source: ShortText = Field(min_length=1)
    contacts: list[object] = Field(max_length=MAX_CONTACTS_PER_REQUEST)


class ContactUpdate(BaseModel):
    """A raw contact change with its source: the value of ``ma.contact-updates``.

    ``op: forget`` erases the contact everywhere (``ma-pipeline forget``).
    """

    contact_id: str
    op: Literal["upsert", "forget"] = "upsert"
    source: str
    email: str | None = None
    attributes: dict[str, object] = Field(default_factory=dict)
    consent_email: bool | None = None
    crm_status: str | None = None
    crm_id: str | None = None
    created_at: UtcDatetime | None = None
    received_at: UtcDatetime
    event_id: str | None = Field(default=None, description="the event that carried it, if any")
    site_id: str | None = Field(
        default=None, description="the site whose server key sent it (POST /v1/contacts)"
    )
    via: Literal["worker"] | None = Field(
        default=None,
        description=(
            "`worker`: a form's or identify's traits, recorded here by the worker, which "
            "applies them in order with the contact's events (not from this topic)"
        ),
    )


class Contact(BaseModel):
    """The merged contact after the field-level merge rules: the value of ``ma.contacts``."""

    contact_id: str
    email: str | None = None
    attributes: dict[str, object] = Field(default_factory=dict)
    consent_email: bool = False
    crm_status: str | None = None
    crm_id: str | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    field_sources: dict[str, str] = Field(
        default_factory=dict, description="which source each attribute's value came from"
    )
    deleted: bool = Field(default=False, description="true once erased by `forget`")
