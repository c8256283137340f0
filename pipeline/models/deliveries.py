"""Delivery attempts: the value of ``ma.deliveries``, one per webhook attempt (CONTRACT §4)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from pipeline.models.types import UtcDatetime

DeliveryStatus = Literal["delivered", "retrying", "dead"]


class Delivery(BaseModel):
    """One attempt to POST a trigger to a destination, and what came of it."""

    trigger_id: str
    destination: str
    attempt: int
    status: DeliveryStatus
    http_status: int | None = None
    error: str | None = None
    at: UtcDatetime
    next_attempt_at: UtcDatetime | None = None
