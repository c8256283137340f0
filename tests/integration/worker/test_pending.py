"""CONTRACT §7 ``triggers pending [EMAIL]``: what waits — rule, subject, due_at, what would
cancel it — read from the worker's state, through the real command; once fired, nothing waits."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.settings import Settings
from tests.integration.worker.conftest import eventually, open_stack, page_view
from tests.integration.worker.test_triggers import customer, wait_triggers

pytestmark = pytest.mark.integration


def pending(settings: Settings, *email: str) -> list[str]:
    env = {"MA_WORKER_URL": settings.worker_api, "MA_CONFIG": str(settings.config)}
    result = CliRunner().invoke(main, ["triggers", "pending", *email], env=env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


async def test_triggers_pending_lists_what_waits_until_it_fires(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with open_stack(kafka_bootstrap, tmp_path) as stack:
        email, contact, aid = await customer(stack)
        nothing = await asyncio.to_thread(pending, stack.settings, email)
        assert nothing == [f"nothing waits for {email}"]
        await stack.send(page_view(aid, "/pricing"))

        async def listed() -> list[str]:
            lines = await asyncio.to_thread(pending, stack.settings, email)
            return [line for line in lines if "pricing-trial-offer" in line]

        [line] = await eventually(listed, timeout=30)
        due_at, rule, channel, subject, trigger_id, *cancel = line.split("  ")
        assert (rule, channel, subject) == ("pricing-trial-offer", "email", email)
        due = datetime.fromisoformat(due_at.replace("Z", "+00:00"))
        assert abs(due - (stack.clock.now() + timedelta(days=1))) < timedelta(minutes=1)
        assert cancel == ["cancelled by: custom, name trial_signup"]
        everything = await asyncio.to_thread(pending, stack.settings)
        assert line in everything  # without an email: all that waits on this worker

        async def metrics() -> str:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{stack.settings.worker_api}/metrics") as response,
            ):
                return await response.text()

        async def gauge() -> bool:  # ma_triggers_pending counts them (every 15 s)
            text = await metrics()
            values = re.findall(r'^ma_triggers_pending\{table="[^"]+"\} ([0-9.]+)$', text, re.M)
            return sum(float(v) for v in values) == len(everything)

        await eventually(gauge, timeout=40)

        async def lag() -> bool:  # and the consumer lag of its groups, per topic (CONTRACT §8)
            text = await metrics()
            topics = set(re.findall(r'^ma_consumer_lag\{[^}]*topic="([^"]+)"[^}]*\} [0-9.e+]+$',
                                    text, re.M))  # fmt: skip
            return stack.settings.topic("events") in topics

        await eventually(lag, timeout=40)

        stack.advance(timedelta(days=1, seconds=1))
        [fired] = [
            t for t in await wait_triggers(stack, contact, 1) if t["rule"] == "pricing-trial-offer"
        ]
        assert fired["trigger_id"] == trigger_id

        async def gone() -> bool:
            return not await listed()

        await eventually(gone, timeout=30)
