"""``ma-pipeline demo``: synthetic visitors through the running collector, then a summary read
back from ClickHouse (through the worker)."""

from __future__ import annotations

import asyncio
import re

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from pipeline.cli import main
from pipeline.demo import run_demo
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
from tests.integration.worker.conftest import Stack

pytestmark = pytest.mark.integration


async def test_demo_tells_its_story_and_what_the_pipeline_made_of_this_run(
    stack: Stack,
) -> None:
    def demo() -> str:
        result = CliRunner().invoke(
            main,
            ["demo", "--visitors", "20", "--seed", "3"],
            env=stack.settings.as_env(),
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return result.output

    output = await asyncio.to_thread(demo)
    sent = re.search(
        r"sent 20 visitors: (\d+) requests, (\d+) events accepted, 0 rejected, (\d+) email "
        r"clicks, (\d+) CRM contacts \(seed 3\)",
        output,
    )
    assert sent, output
    requests, events, clicks, contacts = map(int, sent.groups())
    assert requests > 20 and events > 20 and clicks > 0 and contacts > 0
    assert "partial" not in output  # it waited until this run's events were stored
    this_run = re.search(
        r"This run: (\d+) cookies, (\d+)% of this run's cookies identified", output
    )
    assert this_run, output
    assert int(this_run[1]) > 20 and 0 < int(this_run[2]) < 100
    for section in (
        "identified by",
        "refused as evidence",
        "contacts by lifecycle stage",
        "triggers fired",
        "triggers skipped",
        "top segments",
        "dead letters by reason",
        "Look at this next",
    ):
        assert f"\n{section}" in output or f"\n\n{section}" in output, (section, output)
    # the story's machines and kiosk are told apart from people
    assert "clicked_within_10s_of_send" in output  # the mail gateway's clicks
    assert "cookie_relink_limit" in output  # the trade-show kiosk
    assert "email_click" in output and "form_submit" in output  # how people were identified
    port = stack.settings.worker_web_port
    assert f"the console: http://127.0.0.1:{port}/console" in output
    featured = re.findall(rf"http://127\.0\.0\.1:{port}/console/contact\?email=(\S+)", output)
    assert featured, output
    # the contact it points at is in ClickHouse with this run's events
    rows = await stack.query(
        "SELECT count() FROM {db}.contacts WHERE email = {email:String}", email=featured[0]
    )
    assert rows == [[1]]


async def test_the_same_seed_sends_the_same_story(stack: Stack) -> None:
    """Deterministic with ``--seed``: the same people, cookies, events and figures; sent
    again, the pipeline deduplicates the events (nothing counted twice)."""
    from pipeline.rules import load_rules

    rules = load_rules(stack.settings.config)
    first = await run_demo(stack.settings, rules, visitors=10, seed=11)
    again = await run_demo(stack.settings, rules, visitors=10, seed=11)
    other = await run_demo(stack.settings, rules, visitors=10, seed=12)
    assert again.cookies == first.cookies and again.contacts == first.contacts
    assert again.events == first.events and again.featured == first.featured
    assert not set(other.cookies) & set(first.cookies)
    assert again.caught_up and first.caught_up
    for figure in ("cookies seen", "cookies identified", "identified by"):
        assert again.figures[figure] == first.figures[figure], figure


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
            if value.get("k") == "batch":  # an envelope of hand-overs
                kinds.update(item["k"] for _, item in value["m"])
    assert {"wm", "batch", "event", "linked", "absorb", "update"} <= kinds, kinds


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
