"""Signed email links (CONTRACT §2, "Click tokens"): what verifies, what is refused and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity import contact_id_for
from pipeline.links import (
    MAX_TOKEN_LENGTH,
    LinkClaims,
    LinkError,
    link_url,
    sign,
    url_problem,
    verify,
)
from pipeline.settings import Settings

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
CID = str(contact_id_for("ana.lopez@acme.io"))
KEYS = {"k2": b"new-signing-secret-0002", "k1": b"old-signing-secret-0001"}
URL = "https://www.acme.io/pricing?utm_source=mail&utm_campaign=spring"


def click_token(**overrides: Any) -> str:
    args: dict[str, Any] = {"contact_id": CID, "url": URL, "keys": KEYS, "now": NOW}
    args.update(overrides)
    return sign(**args)


def forge(payload: dict[str, Any], secret: bytes = KEYS["k2"]) -> str:
    """A correctly signed token over an arbitrary payload (what a buggy or foreign signer makes)."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    mac = hmac.new(secret, data, hashlib.sha256).digest()
    return f"{b64(data)}.{b64(mac)}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def reason_of(token: str, *, purpose: str = "click", now: datetime = NOW) -> str:
    with pytest.raises(LinkError) as caught:
        verify(token, keys=KEYS, now=now, purpose=purpose)
    return caught.value.reason


# --- round trip -----------------------------------------------------------------------------


def test_click_token_round_trips_every_claim() -> None:
    token = click_token(campaign_id="spring-2026", site_id="acme", link_id="hero-cta")
    claims = verify(token, keys=KEYS, now=NOW, purpose="click")
    assert claims == LinkClaims(
        contact_id=CID,
        purpose="click",
        url=URL,
        campaign_id="spring-2026",
        site_id="acme",
        link_id="hero-cta",
        issued_at=NOW,
        expires_at=NOW + timedelta(days=90),
        kid="k2",
    )


def test_token_is_two_unpadded_base64url_parts_of_a_compact_json_payload() -> None:
    token = click_token(campaign_id="spring")
    payload_part, signature_part = token.split(".")
    assert "=" not in token
    assert len(signature_part) == 43  # 32 bytes of HMAC-SHA256
    assert payload_of(token) == {
        "v": 1,
        "kid": "k2",
        "p": "click",
        "cid": CID,
        "u": URL,
        "c": "spring",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(days=90)).timestamp()),
    }
    assert b" " not in base64.urlsafe_b64decode(payload_part + "==")


def test_signature_is_hmac_sha256_of_the_payload_bytes() -> None:
    payload_part, signature_part = click_token().split(".")
    data = base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4))
    assert signature_part == b64(hmac.new(KEYS["k2"], data, hashlib.sha256).digest())


def test_optional_claims_are_absent_when_not_given() -> None:
    claims = verify(click_token(), keys=KEYS, now=NOW, purpose="click")
    assert (claims.campaign_id, claims.site_id, claims.link_id) == (None, None, None)
    assert set(payload_of(click_token())) == {"v", "kid", "p", "cid", "u", "iat", "exp"}


@pytest.mark.parametrize("purpose", ["open", "unsubscribe"])
def test_open_and_unsubscribe_tokens_carry_no_url(purpose: str) -> None:
    token = sign(contact_id=CID, purpose=purpose, campaign_id="spring", keys=KEYS, now=NOW)  # type: ignore[arg-type]
    claims = verify(token, keys=KEYS, now=NOW, purpose=purpose)
    assert claims.purpose == purpose
    assert claims.url is None
    assert "u" not in payload_of(token)


def test_contact_id_is_stored_in_canonical_form() -> None:
    token = click_token(contact_id=CID.upper())
    assert verify(token, keys=KEYS, now=NOW, purpose="click").contact_id == CID


def test_a_signed_contact_id_in_another_spelling_verifies_in_canonical_form() -> None:
    payload = payload_of(click_token())
    payload["cid"] = "{" + CID.upper() + "}"
    assert verify(forge(payload), keys=KEYS, now=NOW, purpose="click").contact_id == CID


def test_ttl_sets_the_expiry() -> None:
    claims = verify(click_token(ttl=timedelta(days=7)), keys=KEYS, now=NOW, purpose="click")
    assert claims.expires_at - claims.issued_at == timedelta(days=7)


def test_settings_link_keys_sign_with_the_first_and_verify_with_all() -> None:
    keys = Settings(link_secrets="new:fresh-secret-000000001,old:stale-secret-00000001").link_keys
    token = sign(contact_id=CID, url=URL, keys=keys, now=NOW)
    assert verify(token, keys=keys, now=NOW, purpose="click").kid == "new"
    old_token = sign(contact_id=CID, url=URL, keys=keys, kid="old", now=NOW)
    assert verify(old_token, keys=keys, now=NOW, purpose="click").kid == "old"


def test_default_now_is_the_current_time() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    claims = verify(click_token(now=None), keys=KEYS, now=datetime.now(UTC), purpose="click")
    assert before <= claims.issued_at <= datetime.now(UTC)


# --- key rotation ---------------------------------------------------------------------------


def test_first_key_signs_new_links() -> None:
    assert payload_of(click_token())["kid"] == "k2"


def test_links_signed_with_an_older_key_still_verify() -> None:
    token = click_token(kid="k1")
    assert verify(token, keys=KEYS, now=NOW, purpose="click").kid == "k1"


def test_links_of_a_retired_key_are_refused_as_unknown_kid() -> None:
    token = click_token(kid="k1")
    with pytest.raises(LinkError) as caught:
        verify(token, keys={"k2": KEYS["k2"]}, now=NOW, purpose="click")
    assert caught.value.reason == "unknown_kid"


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAC is compared with ``hmac.compare_digest``: ``==`` stops at the first differing
    byte, and its timing would let a forger find a valid signature byte by byte."""
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("pipeline.links.hmac.compare_digest", compare_digest)
    token = click_token()
    verify(token, keys=KEYS, now=NOW, purpose="click")
    data, signature = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split("."))
    assert compared == [(hmac.new(KEYS["k2"], data, hashlib.sha256).digest(), signature)]

    forged = f"{token.split('.')[0]}.{b64(bytes(32))}"
    assert reason_of(forged) == "bad_signature"
    assert compared[-1][1] == bytes(32)


def test_token_signed_by_another_key_under_a_known_kid_is_a_bad_signature() -> None:
    token = click_token(keys={"k2": b"someone-elses-secret-000"})
    assert reason_of(token) == "bad_signature"


def test_signing_with_an_unconfigured_kid_is_an_error() -> None:
    with pytest.raises(ValueError, match="k9"):
        click_token(kid="k9")


def test_signing_without_keys_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one signing key"):
        click_token(keys={})


def test_signing_with_a_short_secret_is_an_error() -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        click_token(keys={"k": b"short"})


# --- expiry ---------------------------------------------------------------------------------


def test_token_verifies_until_the_last_second_before_expiry() -> None:
    token = click_token(ttl=timedelta(hours=1))
    claims = verify(token, keys=KEYS, now=NOW + timedelta(minutes=59, seconds=59), purpose="click")
    assert claims.expires_at == NOW + timedelta(hours=1)


def test_token_is_expired_at_its_expiry_instant() -> None:
    token = click_token(ttl=timedelta(hours=1))
    assert reason_of(token, now=NOW + timedelta(hours=1)) == "expired"


def test_token_is_expired_long_after() -> None:
    assert reason_of(click_token(), now=NOW + timedelta(days=365)) == "expired"


def test_expired_message_names_the_expiry_time() -> None:
    with pytest.raises(LinkError, match="2026-03-01T10:30:00"):
        verify(
            click_token(ttl=timedelta(hours=1)),
            keys=KEYS,
            now=NOW + timedelta(days=1),
            purpose="click",
        )


def test_ttl_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        click_token(ttl=timedelta(0))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        click_token(now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(click_token(), keys=KEYS, now=datetime(2026, 1, 1), purpose="click")


# --- purpose --------------------------------------------------------------------------------


def test_click_token_cannot_be_used_to_unsubscribe() -> None:
    assert reason_of(click_token(), purpose="unsubscribe") == "wrong_purpose"


def test_unsubscribe_token_cannot_be_used_as_a_click() -> None:
    token = sign(contact_id=CID, purpose="unsubscribe", keys=KEYS, now=NOW)
    assert reason_of(token, purpose="click") == "wrong_purpose"


def test_open_token_cannot_be_used_to_unsubscribe() -> None:
    token = sign(contact_id=CID, purpose="open", keys=KEYS, now=NOW)
    assert reason_of(token, purpose="unsubscribe") == "wrong_purpose"


def test_unknown_purpose_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="purpose"):
        verify(click_token(), keys=KEYS, now=NOW, purpose="redirect")
    with pytest.raises(ValueError, match="purpose"):
        sign(contact_id=CID, purpose="redirect", keys=KEYS)  # type: ignore[arg-type]


# --- tampering ------------------------------------------------------------------------------


def test_tampered_url_is_refused() -> None:
    token = click_token()
    payload = payload_of(token)
    payload["u"] = "https://evil.example/phish"
    forged_payload = b64(json.dumps(payload, separators=(",", ":")).encode())
    assert reason_of(f"{forged_payload}.{token.split('.')[1]}") == "bad_signature"


def test_tampered_contact_is_refused() -> None:
    token = click_token()
    payload = payload_of(token)
    payload["cid"] = str(contact_id_for("mallory@evil.io"))
    forged_payload = b64(json.dumps(payload, separators=(",", ":")).encode())
    assert reason_of(f"{forged_payload}.{token.split('.')[1]}") == "bad_signature"


def test_changing_any_character_of_the_token_is_refused() -> None:
    token = click_token(campaign_id="spring", link_id="hero")
    for index, char in enumerate(token):
        if char == ".":
            continue
        for replacement in {"A", "B", "-", "_", "z"} - {char}:
            tampered = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(LinkError):
                verify(tampered, keys=KEYS, now=NOW, purpose="click")


def test_flipping_any_bit_of_payload_or_signature_bytes_is_refused() -> None:
    token = click_token(campaign_id="spring")
    payload_part, signature_part = token.split(".")
    for part_index, part in enumerate((payload_part, signature_part)):
        data = bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for byte in range(len(data)):
            for bit in range(8):
                mutated = bytearray(data)
                mutated[byte] ^= 1 << bit
                parts = [payload_part, signature_part]
                parts[part_index] = b64(bytes(mutated))
                with pytest.raises(LinkError):
                    verify(".".join(parts), keys=KEYS, now=NOW, purpose="click")


def test_non_canonical_base64_padding_bits_are_refused() -> None:
    # 32 signature bytes use 43 characters with 2 spare bits; another spare-bit pattern must not
    # decode to the same signature and pass.
    payload_part, signature_part = click_token().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature_part[-1])
    twin = alphabet[last ^ 1]
    assert reason_of(f"{payload_part}.{signature_part[:-1]}{twin}") == "malformed"


def test_truncated_signature_is_refused() -> None:
    payload_part, signature_part = click_token().split(".")
    assert reason_of(f"{payload_part}.{signature_part[:40]}") in {"malformed", "bad_signature"}


def test_signature_of_another_token_is_refused() -> None:
    mine = click_token()
    other = click_token(contact_id=str(contact_id_for("bo@acme.io")))
    assert reason_of(f"{mine.split('.')[0]}.{other.split('.')[1]}") == "bad_signature"


# --- malformed and invalid tokens -----------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "abc.",
        ".abc",
        "a.b.c",
        "eyJ2IjoxfQ==.AAAA",  # padding is not part of the format
        "eyJ2Ijox fQ.AAAA",
        "eyJ2IjoxfQ.AAAA\n",
        "e+J2IjoxfQ.AAAA",
        "bm90IGpzb24.AAAA",  # "not json"
        "WzEsMiwzXQ.AAAA",  # "[1,2,3]": JSON but not an object
        "A.AAAA",  # one base64 character cannot encode a byte
        "ZXlK\u0660.AAAA",  # a non-ASCII digit
    ],
)
def test_malformed_tokens_are_refused_as_malformed(token: str) -> None:
    assert reason_of(token) == "malformed"


def test_overlong_token_is_refused_before_decoding() -> None:
    assert reason_of("A" * MAX_TOKEN_LENGTH + ".AAAA") == "malformed"


def test_token_of_another_version_is_unsupported() -> None:
    payload = payload_of(click_token())
    payload["v"] = 2
    assert reason_of(forge(payload)) == "unsupported_version"


@pytest.mark.parametrize("version", [None, "1", True, 1.0])
def test_token_without_an_integer_version_is_unsupported(version: object) -> None:
    payload = payload_of(click_token())
    payload["v"] = version
    assert reason_of(forge(payload)) == "unsupported_version"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kid", None),
        ("kid", 7),
        ("kid", ["k2"]),
        ("p", "redirect"),
        ("cid", "not-a-uuid"),
        ("cid", None),
        ("cid", 12),
        ("u", None),
        ("u", "javascript:alert(1)"),
        ("u", "/relative"),
        ("c", 5),
        ("c", "x" * 201),
        ("iat", "yesterday"),
        ("iat", None),
        ("exp", 1.5),
        ("exp", True),
        ("exp", -1),
        ("exp", 10**30),
    ],
)
def test_signed_payload_with_a_bad_field_is_invalid(field: str, value: object) -> None:
    payload = payload_of(click_token())
    if value is None:
        del payload[field]
    else:
        payload[field] = value
    assert reason_of(forge(payload)) == "invalid_payload"


def test_signed_open_token_with_a_url_is_invalid() -> None:
    payload = payload_of(sign(contact_id=CID, purpose="open", keys=KEYS, now=NOW))
    payload["u"] = URL
    assert reason_of(forge(payload), purpose="open") == "invalid_payload"


def test_unknown_fields_of_a_signed_payload_are_ignored() -> None:
    payload = payload_of(click_token())
    payload["x"] = {"future": True}
    assert verify(forge(payload), keys=KEYS, now=NOW, purpose="click").url == URL


def test_link_error_carries_reason_and_message() -> None:
    with pytest.raises(LinkError) as caught:
        verify(click_token(), keys=KEYS, now=NOW + timedelta(days=91), purpose="click")
    assert caught.value.reason == "expired"
    assert caught.value.message.startswith("expired at")
    assert str(caught.value).startswith("expired: ")


# --- input validation when signing ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "ftp://files.acme.io/a",
        "/pricing",
        "pricing",
        "//evil.example/path",
        "https:evil.example",
        "https://",
        "https:///path",
        "https://acme.io/a b",
        " https://acme.io/",
        "https://acme.io/\t",
        "https://acme.io/\n",
        "https://acme.io/\x00",
        "https://acme.io/\u202e",  # right-to-left override
        "https://acme.io/\u00a0",  # no-break space
        "https://evil.example\\@acme.io/",
        "https://acme.io:99999/",
        "https://[::1/",
        "https://acme.io/" + "a" * 2100,
        "",
    ],
)
def test_click_url_must_be_absolute_http_without_spaces(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        click_token(url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.io",
        "http://localhost:8000/a?b=c#d",
        "HTTPS://ACME.IO/Pricing",
        "https://user@acme.io/",
        "https://[2001:db8::1]/x",
        "https://bücher.example/straße",
        "https://acme.io/a%20b",
    ],
)
def test_ordinary_http_urls_are_accepted(url: str) -> None:
    assert url_problem(url) is None
    assert verify(click_token(url=url), keys=KEYS, now=NOW, purpose="click").url == url


def test_an_ascii_character_is_refused_in_a_url_exactly_when_whitespace_or_a_control() -> None:
    for code in range(128):
        char = chr(code)
        problem = url_problem(f"https://acme.io/a{char}b") or ""
        forbidden = char.isspace() or unicodedata.category(char)[0] in "CZ"
        assert ("whitespace" in problem) == forbidden, repr(char)


def test_click_without_url_is_refused() -> None:
    with pytest.raises(ValueError, match="url: required"):
        click_token(url=None)


def test_unsubscribe_with_url_is_refused() -> None:
    with pytest.raises(ValueError, match="only click links"):
        sign(contact_id=CID, purpose="unsubscribe", url=URL, keys=KEYS)


@pytest.mark.parametrize("contact_id", ["", "ana@acme.io", "null", "1234", CID + "0"])
def test_contact_id_must_be_a_uuid(contact_id: str) -> None:
    with pytest.raises(ValueError, match="contact_id"):
        click_token(contact_id=contact_id)


@pytest.mark.parametrize("field", ["campaign_id", "site_id", "link_id"])
@pytest.mark.parametrize("value", ["", "x" * 201, "a\nb", "a\x00b"])
def test_ids_must_be_short_printable_text(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        click_token(**{field: value})


def test_token_too_long_for_the_collector_is_refused_when_signing() -> None:
    # Multi-byte characters make the payload longer than the character count suggests.
    with pytest.raises(ValueError, match="shorten the URL"):
        click_token(url="https://acme.io/" + "ü" * 2000)


# --- link_url -------------------------------------------------------------------------------


def test_link_url_builds_the_collector_paths() -> None:
    token = click_token()
    assert link_url("https://t.acme.io", token, "click") == f"https://t.acme.io/c/{token}"
    assert link_url("https://t.acme.io/", token, "open") == f"https://t.acme.io/o/{token}.gif"
    assert link_url("https://t.acme.io/", token, "unsubscribe") == f"https://t.acme.io/u/{token}"


def test_link_url_keeps_a_base_path() -> None:
    token = click_token()
    assert link_url("https://acme.io/ma/", token, "click") == f"https://acme.io/ma/c/{token}"


def test_link_url_refuses_a_bad_base_or_token() -> None:
    token = click_token()
    with pytest.raises(ValueError, match="base_url"):
        link_url("javascript:x", token, "click")
    with pytest.raises(ValueError, match="token"):
        link_url("https://t.acme.io", "a/../b.c", "click")
    with pytest.raises(ValueError, match="purpose"):
        link_url("https://t.acme.io", token, "redirect")  # type: ignore[arg-type]


# --- fuzzing: nothing but LinkError, whatever the input --------------------------------------


def _verify_only_link_error(token: str) -> None:
    try:
        claims = verify(token, keys=KEYS, now=NOW, purpose="click")
    except LinkError as error:
        assert error.reason in {
            "malformed",
            "bad_signature",
            "unknown_kid",
            "expired",
            "wrong_purpose",
            "unsupported_version",
            "invalid_payload",
        }
    else:
        assert claims.url is not None and url_problem(claims.url) is None


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_arbitrary_text_only_ever_raises_link_error(token: str) -> None:
    _verify_only_link_error(token)


_TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_TOKEN_ALPHABET, max_size=300))
def test_arbitrary_base64url_text_only_ever_raises_link_error(token: str) -> None:
    _verify_only_link_error(token)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=40))
def test_arbitrary_payload_bytes_only_ever_raise_link_error(data: bytes, mac: bytes) -> None:
    _verify_only_link_error(f"{b64(data)}.{b64(mac)}")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "kid", "p", "cid", "u", "c", "s", "l", "iat", "exp", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=5,
        ),
    )
)
def test_correctly_signed_arbitrary_payloads_only_ever_raise_link_error(
    payload: dict[str, Any],
) -> None:
    try:
        token = forge(payload)
    except ValueError:  # NaN/inf are not JSON; nothing to test
        return
    _verify_only_link_error(token)


_VALID = sign(contact_id=CID, url=URL, campaign_id="spring", link_id="hero", keys=KEYS, now=NOW)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_mutations_of_a_valid_token_only_ever_raise_link_error(data: st.DataObject) -> None:
    token = _VALID
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        index = data.draw(st.integers(0, max(len(token) - 1, 0)))
        char = data.draw(st.characters() | st.sampled_from(_TOKEN_ALPHABET))
        if action == "replace":
            token = token[:index] + char + token[index + 1 :]
        elif action == "insert":
            token = token[:index] + char + token[index:]
        elif action == "delete":
            token = token[:index] + token[index + 1 :]
        elif len(token) > index + 1:
            token = token[:index] + token[index + 1] + token[index] + token[index + 2 :]
    if token == _VALID:
        return
    with pytest.raises(LinkError):
        verify(token, keys=KEYS, now=NOW, purpose="click")
