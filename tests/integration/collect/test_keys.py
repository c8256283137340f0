"""Scoped keys from HTTP (CONTRACT §1 "Keys"), through the real collector and broker: two sites
of one organisation; a key for site B cannot send events for A, upsert contacts, list, count or
export segments or read profiles unless granted; refusals are 403s naming the scope, each with
a dead letter; rotation; secrets from the environment; uses counted by key id."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pipeline import codec
from tests.integration.collect.conftest import (
    AID,
    BROWSER_UA,
    CRM_KEY,
    SITE,
    WRITE_KEY,
    RunningCollector,
)

pytestmark = pytest.mark.integration

BETA_SERVER_KEY = "sk_beta_secret_9f8e7d6c5b4a"
BETA_BACKEND = "mak_beta_backend_from_the_environment"  # in $MA_TEST_KEY_BETA
ACME_2026 = "mak_acme_ops_2026_0123456789"  # by its sha256
ACME_2027 = "mak_acme_ops_2027_9876543210"  # in $MA_TEST_KEY_ACME_2027: the rotated one
BOTH_SITES = "mak_both_sites_ingest_555555"
BETA_SITE = """    rate_limit: {per_second: 50, burst: 200} # per client IP
  - id: beta
    write_key: wk_beta_public_0a1b2c
    server_key: sk_beta_secret_9f8e7d6c5b4a
"""
KEYS = f"""keys:
  - id: beta-backend
    secret_env: MA_TEST_KEY_BETA
    scopes: [ingest:beta]
  - id: acme-ops-2026
    sha256: {hashlib.sha256(ACME_2026.encode()).hexdigest()}
    scopes: [ingest:acme, segments:read, profiles:read]
  - id: acme-ops-2027
    secret_env: MA_TEST_KEY_ACME_2027
    scopes: [ingest:acme, segments:read, profiles:read]
  - id: unset
    secret_env: MA_TEST_KEY_NOBODY_SET_THIS
    scopes: [contacts:write]
  - id: both-sites
    sha256: {hashlib.sha256(BOTH_SITES.encode()).hexdigest()}
    scopes: [ingest:acme, ingest:beta]
"""


@pytest.fixture
def two_sites(collector: RunningCollector, monkeypatch: pytest.MonkeyPatch) -> RunningCollector:
    monkeypatch.setenv("MA_TEST_KEY_BETA", BETA_BACKEND)
    monkeypatch.setenv("MA_TEST_KEY_ACME_2027", ACME_2027)
    monkeypatch.delenv("MA_TEST_KEY_NOBODY_SET_THIS", raising=False)
    collector.use_rules(
        ("    rate_limit: {per_second: 50, burst: 200} # per client IP\n", BETA_SITE),
        ("keys:\n", KEYS),
    )
    return collector


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "User-Agent": BROWSER_UA}


PAGE = {"type": "page_view", "anonymous_id": AID, "url": "https://www.acme.example/pricing"}
SENT = {"type": "email_sent", "contact_id": "6f1c2a9e-8b3d-4c7e-9a51-2d4e6f8a0b13"}


async def attempt(collector: RunningCollector, what: str, secret: str) -> tuple[int, str]:
    """One privileged request of kind ``what`` with ``secret``; its status and error."""
    url, headers = collector.url, bearer(secret)
    http = collector.http
    if what == "events for acme":
        body = {"site_id": SITE, "events": [PAGE, SENT]}
        response = await http.post(f"{url}/v1/batch", json=body, headers=headers)
    elif what == "contacts":
        body = {"source": "crm", "contacts": [{"email": "ann@initech.io", "title": "CEO"}]}
        response = await http.post(f"{url}/v1/contacts", json=body, headers=headers)
    elif what == "profile":
        response = await http.get(f"{url}/v1/profile?aid={AID}", headers=headers)
    else:
        response = await http.get(f"{url}{what}", headers=headers)
    answer = codec.loads(await response.read()) if response.status != 200 else {}
    return response.status, answer.get("error", "") if isinstance(answer, dict) else ""


DENIED = [
    ("events for acme", "ingest:acme"),
    ("contacts", "contacts:write"),
    ("/v1/segments", "segments:read"),
    ("/v1/segments/sales-ready/count", "segments:read"),
    ("/v1/segments/sales-ready/export", "segments:read"),
    ("profile", "profiles:read"),
]


@pytest.mark.parametrize(("what", "scope"), DENIED, ids=[w for w, _ in DENIED])
@pytest.mark.parametrize(
    ("secret", "key_id"),
    [(BETA_SERVER_KEY, "server_key:beta"), (BETA_BACKEND, "beta-backend")],
    ids=["site-b-server-key", "site-b-key"],
)
async def test_a_key_for_site_b_cannot_act_for_a_or_the_organisation(
    two_sites: RunningCollector, what: str, scope: str, secret: str, key_id: str
) -> None:
    status, error = await attempt(two_sites, what, secret)

    assert (status, error) == (403, f"scope {scope} required: key {key_id!r} does not have it")
    assert await two_sites.values("events") == []
    assert await two_sites.values("contact-updates") == []
    letters = await two_sites.values("dead-letter")
    assert [d["error"] for d in letters] == [error]


async def test_granted_keys_work_and_two_keys_with_the_same_scopes_are_valid_at_once(
    two_sites: RunningCollector,
) -> None:
    for secret in (ACME_2026, ACME_2027):  # rotation: the old and the new key, both in force
        response = await two_sites.http.post(
            f"{two_sites.url}/v1/batch",
            json={"site_id": SITE, "events": [PAGE, SENT]},
            headers=bearer(secret),
        )
        assert response.status == 200
        assert (await response.json()) == {"accepted": 2, "rejected": []}
        listed = await two_sites.get("/v1/segments", headers=bearer(secret))
        assert listed.status == 200
        # profiles:read lets it past the key check: 503 here only because no worker runs
        profile = await two_sites.get(f"/v1/profile?aid={AID}", headers=bearer(secret))
        assert profile.status == 503 and "profiles are not available" in (await profile.text())
    beta = await two_sites.http.post(
        f"{two_sites.url}/v1/batch",
        json={"site_id": "beta", "events": [SENT]},  # a server-only type: trusted
        headers=bearer(BETA_BACKEND),
    )
    assert (beta.status, await beta.json()) == (200, {"accepted": 1, "rejected": []})
    contacts = await two_sites.http.post(
        f"{two_sites.url}/v1/contacts",
        json={"source": "crm", "contacts": [{"email": "ann@initech.io"}]},
        headers=bearer(CRM_KEY),
    )
    assert contacts.status == 200
    events = await two_sites.values("events")
    assert sorted(e["site_id"] for e in events) == ["acme"] * 4 + ["beta"]
    assert [u["email"] for u in await two_sites.values("contact-updates")] == ["ann@initech.io"]
    assert await two_sites.values("dead-letter") == []


async def test_a_key_whose_variable_is_unset_is_no_key(two_sites: RunningCollector) -> None:
    """``unset`` names a variable nobody set: nothing its would-be secret says is a key."""
    response = await two_sites.http.post(
        f"{two_sites.url}/v1/contacts",
        json={"source": "crm", "contacts": [{"email": "ann@initech.io"}]},
        headers=bearer("MA_TEST_KEY_NOBODY_SET_THIS"),
    )
    assert response.status == 401
    disabled = two_sites.collector.rules.rules.keyring.disabled
    assert "keys: 'unset' is disabled: $MA_TEST_KEY_NOBODY_SET_THIS is not set" in disabled


async def test_key_uses_are_counted_by_key_id(two_sites: RunningCollector) -> None:
    await attempt(two_sites, "events for acme", ACME_2026)
    await attempt(two_sites, "events for acme", ACME_2026)
    await attempt(two_sites, "contacts", BETA_SERVER_KEY)  # refused, but a use of that key
    await attempt(two_sites, "contacts", "mak_nobody_0000000000000")

    text = await (await two_sites.get("/metrics")).text()
    assert 'ma_key_uses_total{key="acme-ops-2026"} 2.0' in text
    assert 'ma_key_uses_total{key="server_key:beta"} 1.0' in text
    assert "mak_" not in text  # ids, never secrets


def basic(secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{secret}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "User-Agent": "analytics-python/1.4.post1"}


TRACK = {"type": "track", "event": "Signed Up", "anonymousId": AID, "messageId": "m-1"}


async def test_segment_sdks_may_use_a_key_with_one_ingest_scope(
    two_sites: RunningCollector,
) -> None:
    url = f"{two_sites.url}/v1/batch"
    granted = await two_sites.http.post(url, json={"batch": [TRACK]}, headers=basic(BETA_BACKEND))
    assert (granted.status, await granted.json()) == (200, {"success": True})
    [event] = await two_sites.values("events")
    assert (event["site_id"], event["name"]) == ("beta", "Signed Up")

    no_site = await two_sites.http.post(url, json={"batch": [TRACK]}, headers=basic(CRM_KEY))
    assert no_site.status == 403
    refused = await no_site.json()
    assert refused["code"] == "forbidden" and "scope ingest:<site> required" in refused["message"]

    several = await two_sites.http.post(url, json={"batch": [TRACK]}, headers=basic(BOTH_SITES))
    assert several.status == 400
    assert "acme, beta" in (await several.json())["message"]
    assert len(await two_sites.values("dead-letter")) == 2


async def test_a_write_key_is_still_no_server_key(two_sites: RunningCollector) -> None:
    status, _ = await attempt(two_sites, "contacts", WRITE_KEY)
    assert status == 401
