"""One delivery attempt: a trigger POSTed to a destination, signed per Standard Webhooks, and
what its answer means (CONTRACT §5 ``destinations``). Pure apart from the HTTP call.

- ``webhook-id`` is the trigger's id on every attempt (receivers deduplicate on it),
  ``webhook-timestamp`` the attempt's time, ``webhook-signature`` ``v1,<base64 HMAC-SHA256>``
  of ``id.timestamp.body`` with the destination's secret (``standardwebhooks`` signs it).
- 2xx: delivered. 408, 429, 5xx, a timeout or a connection error: retried after
  ``retry_delay`` (or later if ``Retry-After`` says so). A redirect (never followed) and any
  other 4xx: dead.

Example::

    outcome = await attempt(http, destination, secret, trigger_id, body)
    outcome.kind            # "delivered" | "retry" | "dead"
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp
from standardwebhooks.webhooks import Webhook

from pipeline.rules.models import Backoff, Destination

Kind = Literal["delivered", "retry", "dead"]
RETRIED_STATUSES = {408, 429}
USER_AGENT = "ma-pipeline-deliver/1"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked to wait


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign (Standard Webhooks: ``whsec_`` and base64), or None."""
    try:
        Webhook(secret)
    except Exception as exc:  # standardwebhooks raises its own errors and binascii's
        return f"not a Standard Webhooks secret (whsec_<base64>): {exc}"
    return None


def signed_headers(secret: str, trigger_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    signature = Webhook(secret).sign(trigger_id, at, body.decode())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": trigger_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def judge(status: int, retry_after: str | None = None) -> Outcome:
    """What an HTTP answer means for the delivery."""
    if 200 <= status < 300:
        return Outcome("delivered", status)
    if status in RETRIED_STATUSES or status >= 500:
        return Outcome("retry", status, f"HTTP {status}", _seconds(retry_after))
    if 300 <= status < 400:
        return Outcome("dead", status, f"HTTP {status}: redirects are not followed")
    return Outcome("dead", status, f"HTTP {status}")


def _seconds(retry_after: str | None) -> float | None:
    if not retry_after:
        return None
    try:
        return max(float(retry_after), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def retry_delay(attempt: int, backoff: Backoff, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: ``backoff.first`` doubling per attempt, at most
    ``backoff.max``, with ±20% jitter (so that retries of many triggers spread out)."""
    base = min(backoff.first.total_seconds() * 2 ** (attempt - 1), backoff.max.total_seconds())
    jitter: float = (rng or random).uniform(0.8, 1.2)
    return float(base) * jitter


async def attempt(
    http: aiohttp.ClientSession,
    destination: Destination,
    secret: str,
    trigger_id: str,
    body: bytes,
    at: datetime,
) -> Outcome:
    """POST ``body`` once; never follows a redirect; ``destination.timeout`` for all of it."""
    headers = signed_headers(secret, trigger_id, at, body)
    timeout = aiohttp.ClientTimeout(total=destination.timeout.total_seconds())
    try:
        async with http.post(
            destination.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            await response.read()
            return judge(response.status, response.headers.get("Retry-After"))
    except TimeoutError:
        return Outcome("retry", None, f"no answer within {destination.timeout.total_seconds():g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome("retry", None, f"{type(exc).__name__}: {exc}"[:500])
    except asyncio.CancelledError:
        raise
