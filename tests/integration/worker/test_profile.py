"""``GET /v1/profile`` of an identified visitor: the segments its contact is in, refreshed from
ClickHouse, and never an email, a name or a score."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline import contact_id_for
from tests.integration.worker.conftest import Stack, eventually, new_aid, new_email, open_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("profile")
    async with open_stack(kafka_bootstrap, tmp, segment_refresh=1.0) as running:
        yield running


async def test_an_identified_visitor_sees_its_contacts_segments_and_nothing_personal(
    stack: Stack,
) -> None:
    aid, email = new_aid(), new_email("ready")
    for form_id in ("demo-request", "whitepaper"):  # 40 + 15 points: an MQL, "sales-ready"
        await stack.send(
            {"type": "form_submit", "anonymous_id": aid, "email": email, "form_id": form_id}
        )

    async def profile() -> Any:
        response = await stack.http.get(f"{stack.url}/v1/profile", params={"aid": aid})
        assert response.status == 200, await response.text()
        body = await response.json()
        return body if body["segments"] else None

    body = await eventually(profile, timeout=60)
    assert body == {
        "anonymous_id": aid,
        "identified": True,
        "segments": ["sales-ready"],
        "web_triggers": [],
    }
    text = str(body)
    assert email not in text and str(contact_id_for(email)) not in text
