"""Segment calls as our inbound events (``pipeline.collect.segment_api.translate``), without a
server; the HTTP side is ``tests/integration/collect/test_segment_api.py``."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.collect.fast_path import inbound_fields
from pipeline.collect.segment_api import (
    _basic_user,
    event_id_for,
    segment_fields,
    translate,
    uuid5_text,
)
from pipeline.identity import CONTACT_NAMESPACE
from tests.unit.collect.test_fast_path import MANY, NEAR_TEXT, maps, texts, values

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


# -- the one-pass reading of the common calls agrees with translate + inbound_fields -------
_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36"
_PAGE = {"url": "https://a.io/pricing", "title": "Pricing", "referrer": "https://g.co/"}
#: Calls as analytics.js, analytics-node and analytics-python send them.
sdk_calls = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["page", "track", "identify", "screen", "group", "alias", "x"]),
        "messageId": st.one_of(st.uuids().map(str), st.just("ajs-next-1700000000000-abc")),
    },
    optional={
        "anonymousId": st.one_of(st.uuids().map(str), st.just(AID)),
        "userId": st.one_of(st.just("u-42"), st.integers(0, 10**9)),
        "timestamp": st.sampled_from(["2026-12-07T08:12:48.737Z", "2026-12-07T08:12:48Z"]),
        "event": st.sampled_from(["Signed Up", "Order Completed"]),
        "name": st.sampled_from(["Home", "Pricing"]),
        "properties": st.one_of(st.just(_PAGE), st.just({"plan": "growth", "n": 3})),
        "traits": st.one_of(
            st.just({"email": "ann@acme.io", "plan": "pro"}), st.just({"name": "Acme"})
        ),
        "context": st.just({"userAgent": _UA, "page": _PAGE, "library": {"name": "x"}}),
    },
)
_CALL_FIELDS: dict[str, Any] = {
    "type": st.one_of(st.sampled_from(["page", "track", "identify", "screen"]), values),
    "messageId": st.one_of(texts, values),
    "anonymousId": st.one_of(st.sampled_from(NEAR_TEXT), texts, values),
    "userId": st.one_of(texts, values),
    "timestamp": st.one_of(st.sampled_from(NEAR_TEXT[11:16]), texts, values),
    "originalTimestamp": st.one_of(texts, values),
    "event": st.one_of(texts, values),
    "name": st.one_of(texts, values),
    "properties": maps,
    "traits": maps,
    "context": st.one_of(
        values,
        st.fixed_dictionaries(
            {},
            optional={"userAgent": values, "page": st.one_of(maps, values), "traits": maps},
        ),
    ),
}
#: SDK calls, or SDK calls but for one field.
segment_calls = st.one_of(
    sdk_calls,
    st.tuples(sdk_calls, st.sampled_from(sorted(_CALL_FIELDS)), st.data()).map(
        lambda t: {**t[0], t[1]: t[2].draw(_CALL_FIELDS[t[1]])}
    ),
)


@MANY
@given(call=segment_calls, shared=st.one_of(st.none(), st.just({"userAgent": "B"}), values))
@example(call={"type": "identify", "userId": 7, "traits": {"email": "a@b.io"}}, shared=None)
@example(call={"type": "page", "anonymousId": " " + AID}, shared=None)
@example(call={"type": "page", "timestamp": "", "originalTimestamp": 5}, shared=None)
def test_common_calls_are_read_in_one_pass_as_translate_then_the_fast_path_read_them(
    call: dict[str, Any], shared: object
) -> None:
    fields, agent = segment_fields(call, "acme", shared)
    raw, translated_agent = translate(call, "acme", shared)
    assert agent == translated_agent
    if fields is not None:
        assert fields == inbound_fields(raw)


@pytest.mark.parametrize("kind", ["page", "track", "identify", "screen"])
def test_what_the_sdks_send_takes_the_one_pass(kind: str) -> None:
    call = {
        "type": kind,
        "messageId": "ajs-next-1700000000000-abc",
        "anonymousId": AID,
        "userId": "u-42",
        "timestamp": "2026-12-07T08:12:48.737Z",
        "event": "Signed Up",
        "name": "Pricing",
        "properties": _PAGE,
        "traits": {"email": "ann@acme.io", "plan": "pro"},
        "context": {"userAgent": _UA, "page": _PAGE, "library": {"name": "analytics.js"}},
    }
    fields, agent = segment_fields(call, "acme")
    assert fields is not None and agent == _UA
