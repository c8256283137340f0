"""The messages of CONTRACT §2 and §4 as pydantic models; JSON Schemas in ``schemas/json/``."""

from pipeline.models.contacts import Contact, ContactsRequest, ContactUpdate, ContactUpsert
from pipeline.models.dead_letter import DeadLetter
from pipeline.models.deliveries import Delivery, DeliveryStatus
from pipeline.models.events import (
    BROWSER_TYPES,
    COLLECTOR_TYPES,
    SERVER_TYPES,
    BatchRequest,
    Event,
    EventType,
    InboundEvent,
)
from pipeline.models.identities import IdentityDecision, IdentityReason
from pipeline.models.scores import LifecycleStage, ScoreChange
from pipeline.models.triggers import Channel, Trigger

__all__ = [
    "BROWSER_TYPES",
    "COLLECTOR_TYPES",
    "SERVER_TYPES",
    "BatchRequest",
    "Channel",
    "Contact",
    "ContactUpdate",
    "ContactUpsert",
    "ContactsRequest",
    "DeadLetter",
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventType",
    "IdentityDecision",
    "IdentityReason",
    "InboundEvent",
    "LifecycleStage",
    "ScoreChange",
    "Trigger",
]
