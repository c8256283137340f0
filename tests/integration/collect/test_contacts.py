"""POST /v1/contacts (CRM sync, server key) through the real collector and broker."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from pipeline import contact_id_for
from tests.integration.collect.conftest import CRM_KEY, SERVER_KEY, WRITE_KEY, RunningCollector

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {CRM_KEY}"}


async def post_contacts(
    collector: RunningCollector, body: Any, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    response = await collector.http.post(
        f"{collector.url}/v1/contacts", json=body, headers=AUTH if headers is None else headers
    )
    await response.read()
    return response


async def test_contacts_are_upserted_keyed_by_their_contact_id(
    collector: RunningCollector,
) -> None:
    contacts = [
        {
            "email": "  Ana.Lopez@Acme-Corp.io ",
            "attributes": {"title": "Marketing Manager", "company": "Acme"},
            "consent_email": True,
            "crm_status": "lead",
            "crm_id": "003xx000004TmiQ",
            "created_at": "2025-11-03T09:15:00Z",
        },
        {"email": "bo@globex.io"},
    ]

    response = await post_contacts(collector, {"source": "crm", "contacts": contacts})

    assert response.status == 200
    assert await response.json() == {"accepted": 2, "rejected": []}
    updates = {m.key: m.value for m in await collector.read("contact-updates")}
    ana_id = str(contact_id_for("ana.lopez@acme-corp.io"))
    assert set(updates) == {ana_id.encode(), str(contact_id_for("bo@globex.io")).encode()}
    ana = updates[ana_id.encode()]
    assert ana["contact_id"] == ana_id
    assert ana["email"] == "ana.lopez@acme-corp.io"
    assert ana["source"] == "crm"
    assert ana["attributes"] == {"title": "Marketing Manager", "company": "Acme"}
    assert (ana["consent_email"], ana["crm_status"], ana["crm_id"]) == (
        True,
        "lead",
        "003xx000004TmiQ",
    )
    assert ana["created_at"] == "2025-11-03T09:15:00Z"
    assert ana["received_at"].endswith("Z")
    assert "consent_email" not in updates[str(contact_id_for("bo@globex.io")).encode()]


async def test_invalid_contacts_are_listed_by_index_and_dead_lettered(
    collector: RunningCollector,
) -> None:
    contacts: list[Any] = [
        {"email": "ann@initech.io"},
        {"email": "not-an-email"},
        {"email": "test@test.com"},
        42,
        {"attributes": {"title": "CEO"}},
        {"email": "cy@initech.io", "consent_email": "sometimes"},
        {"email": "dee@initech.io", "created_at": "last tuesday"},
    ]

    response = await post_contacts(collector, {"source": "crm", "contacts": contacts})

    assert response.status == 200
    body = await response.json()
    assert body["accepted"] == 1
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1] == "contacts[1].email: not an email address"
    assert errors[2].startswith("contacts[2].email: placeholder")
    assert errors[3].startswith("contacts[3]")
    assert errors[4].startswith("contacts[4].email")
    assert errors[5].startswith("contacts[5].consent_email")
    assert errors[6].startswith("contacts[6].created_at")
    (update,) = await collector.values("contact-updates")
    assert update["email"] == "ann@initech.io"
    letters = await collector.values("dead-letter")
    assert sorted(d["error"] for d in letters) == sorted(errors.values())
    assert {d["source"] for d in letters} == {"collector:/v1/contacts"}
    assert {str(d["payload"]) for d in letters} >= {"42", str(contacts[1])}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk_wrong_0000000000"}, {"Authorization": f"Bearer {WRITE_KEY}"}],
    ids=["missing", "wrong", "write-key"],
)
async def test_contacts_need_a_server_key(
    collector: RunningCollector, headers: dict[str, str]
) -> None:
    body = {"source": "crm", "contacts": [{"email": "ann@initech.io"}]}

    response = await post_contacts(collector, body, headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "server key" in (await response.json())["error"]
    assert await collector.values("contact-updates") == []


async def test_a_site_server_key_may_not_upsert_contacts(collector: RunningCollector) -> None:
    """A site's server key means ingest:<site> only (CONTRACT §1 "Keys")."""
    body = {"source": "crm", "contacts": [{"email": "ann@initech.io"}]}

    response = await post_contacts(collector, body, {"Authorization": f"Bearer {SERVER_KEY}"})

    assert response.status == 403
    error = (await response.json())["error"]
    assert error == "scope contacts:write required: key 'server_key:acme' does not have it"
    assert await collector.values("contact-updates") == []
    letters = await collector.values("dead-letter")
    assert [(d["source"], d["error"]) for d in letters] == [("collector:/v1/contacts", error)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "body is not valid JSON"),
        (b'{"contacts": []}', "body.source"),
        (b'{"source": "crm"}', "body.contacts"),
    ],
)
async def test_an_unusable_contacts_body_gets_400(
    collector: RunningCollector, body: bytes, message: str
) -> None:
    response = await collector.http.post(f"{collector.url}/v1/contacts", data=body, headers=AUTH)

    assert response.status == 400
    assert message in (await response.json())["error"]
    (letter,) = await collector.values("dead-letter")
    assert message in letter["error"]


@pytest.mark.parametrize(
    ("contacts", "message"),
    [
        ([{"email": f"p{i}@initech.io"} for i in range(1001)], "at most 1000"),
        ([{"email": "big@initech.io", "attributes": {"notes": "n" * (4 * 1024 * 1024)}}],
         "body: at most 4096 KiB"),
    ],
    ids=["1001-contacts", "over-4-MiB"],
)  # fmt: skip
async def test_contacts_over_the_limits_get_413(
    collector: RunningCollector, contacts: list[dict[str, Any]], message: str
) -> None:
    response = await post_contacts(collector, {"source": "crm", "contacts": contacts})

    assert response.status == 413
    assert message in (await response.json())["error"]
    assert await collector.values("contact-updates") == []
    (letter,) = await collector.values("dead-letter")
    assert message in letter["error"]
