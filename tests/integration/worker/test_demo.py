"""``ma-pipeline demo``: synthetic visitors through the running collector, then a summary read
back from ClickHouse (through the worker)."""

from __future__ import annotations

import asyncio
import re

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from pipeline.cli import main
from pipeline.models import (
    Contact,
    ContactUpdate,
    DeadLetter,
    Event,
    IdentityDecision,
    ScoreChange,
    Trigger,
)
from pipeline.models.internal import AnonymousEvent, ContactWork, CookieCommand, TriggerDecision
from tests.integration.worker.conftest import Stack, eventually

pytestmark = pytest.mark.integration


async def test_demo_sends_visitors_and_prints_what_the_pipeline_made_of_them(
    stack: Stack,
) -> None:
    def demo() -> str:
        result = CliRunner().invoke(
            main, ["demo", "--visitors", "12"], env=stack.settings.as_env(), catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.output

    output = await asyncio.to_thread(demo)
    sent = re.match(
        r"sent 12 visitors: (\d+) requests, (\d+) events accepted, 0 rejected, (\d+) email "
        r"clicks, (\d+) CRM contacts",
        output,
    )
    assert sent, output
    requests, accepted, clicks, contacts = map(int, sent.groups())
    events = accepted - contacts  # the CRM contacts' upserts count as accepted too
    assert requests > 12 and events > 12 and clicks > 0 and contacts > 0
    for figure in ("events", "contacts", "identified cookies", "triggers by rule"):
        assert f"\n  {figure}: " in output
    # every event it sent reaches ClickHouse (clicks are events too, counted apart)
    await eventually(
        lambda: stack.query(
            "SELECT 1 FROM {db}.events HAVING count() >= {n:UInt64}", n=events + clicks
        ),
        timeout=60,
    )


#: The public topics and the models their JSON Schemas (``schemas/json/``) are made from.
PUBLISHED: dict[str, type[BaseModel]] = {
    "events": Event,
    "contact-updates": ContactUpdate,
    "contacts": Contact,
    "identities": IdentityDecision,
    "scores": ScoreChange,
    "triggers": Trigger,
    "dead-letter": DeadLetter,
}


#: The worker's internal topics and their models (``pipeline/models/internal.py``).
INTERNAL: dict[str, type[BaseModel]] = {
    "x.contact-work": ContactWork,
    "x.cookie-commands": CookieCommand,
    "x.anonymous-events": AnonymousEvent,
    "x.decisions": TriggerDecision,
}


async def test_every_internal_message_matches_its_schema(stack: Stack) -> None:
    """The hand-overs between the worker's stages are the typed messages of
    ``pipeline.models.internal`` (watermarks, events, links, history, form traits)."""
    kinds = set()
    for topic, model in INTERNAL.items():
        async with stack.reader(topic) as reader:
            await reader.settle(1.0)
        for value in reader.values:
            model.model_validate(value)
            kinds.add(value.get("k", topic))
    assert {"wm", "event", "linked", "absorb", "update"} <= kinds, kinds


async def test_every_published_message_matches_its_schema(stack: Stack) -> None:
    """After the demo's traffic (every kind of message), each value on each public topic is
    valid for its model and holds no field the schema does not declare."""
    for topic, model in PUBLISHED.items():
        async with stack.reader(topic) as reader:
            await reader.settle(1.0)
        assert reader.values or topic == "dead-letter", f"nothing on {topic}"
        declared = set(model.model_fields)
        for value in reader.values:
            if value is None:  # a tombstone (erasure)
                continue
            model.model_validate(value)
            assert set(value) <= declared, (topic, set(value) - declared)
