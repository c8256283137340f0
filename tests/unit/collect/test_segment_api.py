"""Segment calls as our inbound events (``pipeline.collect.segment_api.translate``), without a
server; the HTTP side is ``tests/integration/collect/test_segment_api.py``."""

from __future__ import annotations

import base64
import uuid

import pytest

from pipeline.collect.segment_api import _basic_user, event_id_for, translate, uuid5_text
from pipeline.identity import CONTACT_NAMESPACE

AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"


def test_page_takes_its_url_from_properties_before_the_context() -> None:
    raw, agent = translate(
        {"type": "page", "anonymousId": AID, "properties": {"url": "https://a.io/x"},
         "context": {"page": {"url": "https://a.io/y", "title": "T"}, "userAgent": "UA"}},
        "acme",
    )  # fmt: skip
    assert (raw["type"], raw["url"], raw["title"], agent) == (
        "page_view",
        "https://a.io/x",
        "T",
        "UA",
    )


def test_a_batchs_context_is_used_when_a_call_has_none() -> None:
    raw, agent = translate(
        {"type": "page", "anonymousId": AID},
        "acme",
        {"page": {"url": "https://a.io/"}, "userAgent": "B"},
    )
    assert (raw["url"], agent) == ("https://a.io/", "B")


def test_identify_keeps_user_id_as_a_trait_only_with_an_email() -> None:
    with_email, _ = translate(
        {"type": "identify", "userId": 42, "traits": {"email": "a@b.io", "plan": "x"}}, "acme"
    )
    assert with_email["user_id"] == "42" and with_email["email"] == "a@b.io"
    assert with_email["traits"] == {"plan": "x", "user_id": "42"}
    without, _ = translate({"type": "identify", "userId": "u", "traits": {"plan": "x"}}, "acme")
    assert "email" not in without and without["traits"] == {"plan": "x"}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ({"type": "screen", "name": "Home"}, {"type": "page_view", "url": "app://Home"}),
        ({"type": "track", "event": "E"}, {"type": "custom", "name": "E"}),
        ({"type": "group", "groupId": "g", "traits": {"name": "Co"}},
         {"type": "group", "traits": {"company": "Co"}}),
        ({"type": "alias", "previousId": "p"}, {"type": "alias"}),
        ({"type": "nonsense"}, {"type": "nonsense"}),
    ],
)  # fmt: skip
def test_each_call_type_maps_to_ours(call: dict[str, object], expected: dict[str, object]) -> None:
    raw, _ = translate({"anonymousId": AID, **call}, "acme")
    assert {k: raw[k] for k in expected} == expected


def test_message_id_is_kept_when_a_uuid_and_hashed_with_the_site_otherwise() -> None:
    given = str(uuid.uuid4())
    assert event_id_for("acme", given.upper()) == given
    assert event_id_for("acme", "m-1") == str(uuid.uuid5(CONTACT_NAMESPACE, "acme:m-1"))
    assert event_id_for("acme", "m-1") != event_id_for("other", "m-1")


def test_basic_auth_gives_the_user_name() -> None:
    token = base64.b64encode(b"wk_key:").decode()
    assert _basic_user(f"Basic {token}") == "wk_key"
    assert _basic_user("Basic !!!") is None
    assert _basic_user("Bearer wk_key") is None


@pytest.mark.parametrize(
    "name", ["", "acme:ajs-next-1700000000000-abc", "acme:ünïcode-中", "x" * 300]
)
def test_uuid5_text_is_uuid5(name: str) -> None:
    assert uuid5_text(name) == str(uuid.uuid5(CONTACT_NAMESPACE, name))
