"""The hand-written fast path of event validation (pipeline.collect.fast_path) is the pydantic
model's twin: it accepts only what the model accepts, with the same values, and leaves
everything else (and every error message) to the model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline import codec
from pipeline.collect import fast_path, validation
from pipeline.collect.fast_path import inbound_fields
from pipeline.collect.validation import validate_events
from pipeline.models import InboundEvent

AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"
EVENT_ID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies: the plain shape, and values just beside it -------------------------------------
NEAR_TEXT = [
    "",
    " ",
    " padded ",
    "\u3000x",
    "x\x1f",
    "null",
    "[object Object]",
    "é" * 201,
    "😀",
    "\x00",
    "ümlaut",
    "9999-12-31T23:59:59-23:59",
    "2026-01-01T09:00",
    "2026-01-01T09:00:00.123+02:00",
    "2026-13-01",
    "1767225600000",
    "https://www.acme.example/pricing?plan=pro#faq",
    "HTTPS://WWW.ACME.EXAMPLE/",
    "http://[::1]/x",
    "https://[::1",
    "https://ex\u2100mple.com/",
    "javascript:alert(1)",
    "ann@acme.io",
    " Ann@Acme.IO ",
    "noreply@acme.io",
    AID,
    AID.upper(),
    AID.replace("-", ""),
    "{" + AID + "}",
    "urn:uuid:" + AID,
    "00000000-0000-0000-0000-000000000000",
]
NEAR_NUMBERS = [0, -1, 1, 1767225600000, 1767225600000.5, 32503680000000, 32503679999999,
                2**63, 2**64 - 1, 1e308, -0.0, 0.1]  # fmt: skip
#: What orjson decodes (and encodes): 64-bit integers.
json_integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(NEAR_TEXT),
    st.sampled_from([("x", 129), ("x", 201), ("x", 321), ("x", 2049), ("x", 4097)]).map(
        lambda p: p[0] * p[1]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    json_integers,
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.sampled_from(NEAR_NUMBERS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
maps = st.one_of(
    st.dictionaries(st.sampled_from(["plan", "first_name", "title", "k" * 129]), values),
    st.just({f"k{i}": i for i in range(101)}),
    st.just({"a": {"b": {"c": {"d": 1}}}}),
    st.just({"a": {"b": {"c": {"d": {"e": 1}}}}}),
    values,
)
TYPES = [*sorted(fast_path.EVENT_TYPES), "PAGE_VIEW", "", "nonsense"]
fields = {
    "event_id": st.one_of(st.uuids().map(str), texts, values),
    "type": st.one_of(st.sampled_from(TYPES), values),
    "anonymous_id": st.one_of(st.uuids().map(str), texts, values),
    "ts": st.one_of(st.sampled_from(NEAR_NUMBERS), json_integers, st.floats(), texts, values),
    "url": st.one_of(st.sampled_from(NEAR_TEXT[14:22]), texts, values),
    "referrer": st.one_of(texts, values),
    "title": st.one_of(texts, values),
    "name": st.one_of(texts, values),
    "properties": maps,
    "email": st.one_of(st.emails(), texts, values),
    "traits": maps,
    "form_id": st.one_of(texts, values),
    "contact_id": st.one_of(st.uuids().map(str), texts, values),
    "campaign_id": st.one_of(texts, values),
    "bounce_type": st.one_of(st.sampled_from(["hard", "soft", "HARD"]), texts, values),
    "extra": values,
}
json_scalars = st.one_of(st.none(), st.booleans(), json_integers, st.floats(), st.text())
small_maps = st.dictionaries(
    st.text(max_size=8), st.one_of(json_scalars, st.lists(json_scalars, max_size=3)), max_size=4
)
#: Values of the tag's plain shape, field by field.
plain = {
    "event_id": st.uuids().map(str),
    "contact_id": st.uuids().map(str),
    "ts": st.one_of(
        st.integers(min_value=0, max_value=32503680000000 - 1),
        st.floats(min_value=0, max_value=32503680000000, exclude_max=True),
    ),
    "url": st.sampled_from(NEAR_TEXT[14:22]),
    "email": st.emails(),
    "properties": small_maps,
    "traits": small_maps,
    "bounce_type": st.sampled_from(["hard", "soft"]),
}
plain_events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES[:9]), "anonymous_id": st.one_of(st.just(AID), st.text())},
    optional={
        name: plain.get(name, st.text(max_size=30))
        for name in fields
        if name not in ("type", "anonymous_id")
    },
)
#: Events of the tag's shape, or of it but for one field.
events = st.one_of(
    plain_events,
    st.tuples(plain_events, st.sampled_from(sorted(fields)), st.data()).map(
        lambda t: {**t[0], t[1]: t[2].draw(fields[t[1]])}
    ),
)


def model_fields(raw: dict[str, Any]) -> dict[str, Any] | None:
    """What the model makes of ``raw`` (UUIDs as text), or None when it refuses it."""
    try:
        event = InboundEvent.model_validate(raw)
    except ValidationError:
        return None
    return {
        name: str(value) if isinstance(value, uuid.UUID) else value
        for name, value in event.__dict__.items()
    }


def tag_events() -> list[dict[str, Any]]:
    """Events as the JS tag posts them (after JSON decoding)."""
    base = {
        "event_id": EVENT_ID,
        "anonymous_id": AID,
        "ts": 1767225600000,
        "url": "https://www.acme.example/pricing?utm_source=newsletter",
        "title": "Pricing",
    }
    return [
        {**base, "type": "page_view", "referrer": "https://www.google.com/"},
        {**base, "type": "custom", "name": "video_played", "properties": {"plan": "growth"}},
        {**base, "type": "identify", "email": "Ana.Lopez@Acme.io", "traits": {"title": "CTO"}},
        {
            **base,
            "type": "form_submit",
            "email": "ben@globex.io",
            "form_id": "demo-request",
            "traits": {"first_name": "Ben", "consent_email": True, "tags": ["a", "b"]},
        },
        {**base, "type": "page_view", "ts": 1767225600000.25, "title": "Prix – Café ☕"},
    ]


@pytest.fixture
def slow_path_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(validation, "inbound_fields", lambda raw: None)
    yield


def both_paths(raw_events: list[Any], *, trusted: bool) -> tuple[Any, Any]:
    """``validate_events`` with and without the fast path, event ids for absent ones alike."""

    def run() -> Any:
        ids = iter(str(uuid.UUID(int=i, version=4)) for i in range(1, 10**6))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(validation, "new_id", lambda: next(ids))
            result = validate_events(
                raw_events, site_id="acme", trusted=trusted, received_at=NOW, user_agent=UA
            )
        accepted = [codec.dumps(value) for value in result.accepted]
        return accepted, result.rejected

    fast = run()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "inbound_fields", lambda raw: None)
        slow = run()
    return fast, slow


# -- the fast path agrees with the model ---------------------------------------------------
@MANY
@given(raw=st.one_of(events, st.dictionaries(st.sampled_from(sorted(fields)), values)))
@example(raw={"type": "custom", "name": "x", "ts": True})
@example(raw={"type": "custom", "name": "x", "properties": None})
@example(raw={"type": "custom", "name": "x", "anonymous_id": " " + AID})
@example(raw={"type": "custom", "name": "x", "title": "a\udfffb"})
@example(raw={"type": "custom", "name": "x", "traits": {"k\ud800": 1}})
def test_fast_path_fields_equal_the_models_or_defer_to_it(raw: dict[str, Any]) -> None:
    fast = inbound_fields(raw)
    if fast is not None:
        assert fast == model_fields(raw)
        assert fast.keys() == InboundEvent.model_fields.keys()


@MANY
@given(raw_events=st.lists(st.one_of(events, values), max_size=6), trusted=st.booleans())
def test_accepted_values_and_rejections_are_the_same_either_way(
    raw_events: list[Any], trusted: bool
) -> None:
    fast, slow = both_paths(raw_events, trusted=trusted)
    assert fast == slow


def test_the_tags_events_take_the_fast_path() -> None:
    for raw in tag_events():
        assert inbound_fields(raw) == model_fields(raw)


@pytest.mark.parametrize("trusted", [False, True])
def test_the_tags_events_are_accepted_byte_for_byte_as_before(trusted: bool) -> None:
    fast, slow = both_paths(tag_events(), trusted=trusted)
    assert fast == slow
    assert len(fast[0]) == len(tag_events())


def test_rejections_still_carry_the_models_messages() -> None:
    raw = [
        {"type": "page_view", "anonymous_id": AID},
        {"type": "custom", "anonymous_id": AID, "name": "x", "ts": True},
        {"type": "nonsense", "anonymous_id": AID},
        {"type": "page_view", "anonymous_id": AID, "url": "javascript:alert(1)"},
        {"type": "custom", "anonymous_id": AID, "name": "x", "event_id": "not-a-uuid"},
    ]
    result = validate_events(raw, site_id="acme", trusted=False, received_at=NOW)
    assert [r.error for r in result.rejected] == [
        "events[0].url: required for page_view",
        "events[1].ts: expected an ISO-8601 time or epoch milliseconds, got a boolean",
        "events[2].type: unknown event type 'nonsense'; input should be 'page_view', 'custom', "
        "'form_submit', 'identify', 'email_click', 'email_open', 'unsubscribe', 'email_sent', "
        "'email_bounce', 'group' or 'alias'",
        "events[3].url: expected an absolute http(s) URL",
        "events[4].event_id: Input should be a valid UUID, invalid character: found `n` at 0",
    ]


def test_the_fast_path_covers_every_field_of_the_model() -> None:
    assert InboundEvent.model_fields.keys() == fast_path.FIELDS


# -- URLs: one regular expression for the plain ones, urlsplit for the rest ---------------------
def reference_http_path(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme in ("http", "https") and parts.netloc:
        return parts.path or "/"
    return None


URL_PARTS = "http:// https:// HTTP:// https: // ftp:// a / ? # [ ] ::1 é @ : %2F acme.example x ."
url_parts = st.sampled_from([*URL_PARTS.split(), " https://", "\t", "\n", " "])


@MANY
@given(url=st.one_of(st.lists(url_parts, max_size=8).map("".join), st.text(max_size=20)))
@example(url="https://www.acme.example")
@example(url="https://www.acme.example?x=/y")
@example(url="https://www.acme.example#/y?z")
@example(url="https://www.ac\tme.example/p")
@example(url="https://[::1]/p")
@example(url="https://ex\u2100mple.com/")
def test_http_paths_are_urlsplits(url: str) -> None:
    assert validation._http_path(url) == reference_http_path(url)
    assert validation._is_http_url(url) == (reference_http_path(url) is not None)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-02T09:00:00.000Z",  # Date.toISOString(), what Segment's SDKs send
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:00:00.5Z",
        "2026-03-02T09:00:00.123456Z",
        "2026-13-02T09:00:00Z",
        "2026-02-30T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2026-03-02T23:59:60Z",
        "2026-03-02T24:00:00Z",
    ],
)
def test_utc_times_as_sdks_write_them_read_as_the_model_reads_them(text: str) -> None:
    raw = {"type": "custom", "name": "x", "anonymous_id": AID, "ts": text}
    fast, slow = both_paths([raw], trusted=False)
    assert fast == slow
