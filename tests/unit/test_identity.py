import uuid

import pytest

from pipeline import CONTACT_NAMESPACE, contact_id_for
from pipeline.identity import email_rejection, is_garbage_identifier, new_id, normalize_email


def test_contact_id_is_uuid5_of_the_normalised_email() -> None:
    expected = uuid.uuid5(CONTACT_NAMESPACE, "ana.lopez@acme.io")
    assert contact_id_for("  Ana.Lopez@ACME.io ") == expected


def test_namespace_is_the_published_constant() -> None:
    assert str(CONTACT_NAMESPACE) == "7f25ab20-4a82-5c35-9e83-f84177e3c6b9"


def test_normalisation_applies_nfkc() -> None:
    # fullwidth letters and the fullwidth @ fold to ASCII under NFKC
    assert normalize_email("ＡＮＡ＠acme.io") == "ana@acme.io"


@pytest.mark.parametrize(
    "email",
    ["ana@acme.io", "ok.person+tag@sub.acme.co.jp", "foo@gmail.com", "o'brien@acme.ie"],
)
def test_real_addresses_may_identify(email: str) -> None:
    assert email_rejection(email) is None


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("test@test.com", "placeholder"),
        ("a@a.a", "not an email"),
        ("noreply@acme.io", "noreply"),
        ("no-reply@acme.io", "noreply"),
        ("donotreply@acme.io", "noreply"),
        ("asdf@asdf.com", "placeholder"),
        ("aaa@aaa.aaa", "fake"),
        ("someone@example.com", "placeholder domain"),
        ("x@shop.test", "reserved"),
        ("undefined", "placeholder"),
        ("null", "placeholder"),
        ("", "placeholder"),
        ("ana@@acme.io", "not an email"),
        ("ana acme@acme.io", "not an email"),
        ("ana..x@acme.io", "not an email"),
        ("x" * 250 + "@acme.io", "longer"),
    ],
)
def test_placeholder_and_invalid_emails_never_identify(email: str, reason: str) -> None:
    rejection = email_rejection(normalize_email(email))
    assert rejection is not None
    assert reason in rejection


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "  ",
        "null",
        "NULL",
        "undefined",
        "None",
        "0",
        "-1",
        "[object Object]",
        '"undefined"',
        "'null'",
        "`none`",
        '" "',
        42,
    ],
)
def test_garbage_identifiers_are_recognised(value: object) -> None:
    assert is_garbage_identifier(value)


@pytest.mark.parametrize("value", ["3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01", "crm-000123", "10"])
def test_real_identifiers_are_kept(value: str) -> None:
    assert not is_garbage_identifier(value)


def test_new_id_is_a_random_uuid4_in_canonical_text() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
