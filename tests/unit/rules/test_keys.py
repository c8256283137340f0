"""The rules file's ``keys:`` (CONTRACT §1 "Keys"): the model refuses what cannot be a key, the
keyring identifies secrets by digest, against every key, and never holds a secret itself."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pipeline.rules import RulesError, parse_rules
from pipeline.rules.keys import Credential, Keyring, new_secret

SITES = """
sites:
  - id: acme
    write_key: wk_12345678
    server_key: sk_1234567890123456
  - id: beta
    write_key: wk_87654321
    server_key: sk_6543210987654321
"""
SECRET = "mak_a_secret_of_some_length"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()


def rules_with(keys: str) -> str:
    return SITES + "keys:\n" + keys


def test_a_key_by_hash_and_a_key_by_variable_are_identified() -> None:
    rules = parse_rules(
        rules_with(
            f"""
  - id: crm
    sha256: {DIGEST}
    scopes: [contacts:write, segments:read]
  - id: ops
    secret_env: MA_KEY_OPS
    scopes: [ingest:beta, console]
"""
        )
    )
    keyring = Keyring(rules, {"MA_KEY_OPS": "  mak_from_the_environment_1  \n"})

    assert keyring.identify(SECRET) == Credential(
        "crm", frozenset({"contacts:write", "segments:read"})
    )
    ops = keyring.identify("mak_from_the_environment_1")
    assert ops is not None and ops.id == "ops" and ops.ingest_sites == ["beta"]
    assert ops.allows("console") and not ops.allows("contacts:write")
    assert keyring.identify(DIGEST) is None  # the hash is no secret
    assert keyring.identify("") is None
    assert keyring.disabled == []


def test_a_site_server_key_means_ingest_for_that_site_only() -> None:
    keyring = Keyring(parse_rules(SITES), {})
    credential = keyring.identify("sk_6543210987654321")
    assert credential == Credential("server_key:beta", frozenset({"ingest:beta"}), "beta")
    assert keyring.identify("wk_87654321") is None  # a write key is public: no key


@pytest.mark.parametrize(
    ("environ", "why"),
    [({}, "is not set"), ({"MA_KEY_OPS": "short"}, "is shorter than 16")],
)
def test_a_key_without_its_variable_is_disabled_and_says_so(
    environ: dict[str, str], why: str
) -> None:
    rules = parse_rules(rules_with("  - {id: ops, secret_env: MA_KEY_OPS, scopes: [console]}\n"))
    keyring = Keyring(rules, environ)
    assert keyring.disabled == [f"keys: 'ops' is disabled: $MA_KEY_OPS {why}"]
    assert keyring.identify("short") is None


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``hmac.compare_digest`` of equal-length digests per key, matched or not, first or
    last: how long identify takes says nothing of which key (or how much of one) matched."""
    rules = parse_rules(
        rules_with(
            f"  - {{id: a, sha256: {DIGEST}, scopes: [console]}}\n"
            f"  - {{id: b, sha256: {'f' * 64}, scopes: [console]}}\n"
        )
    )
    keyring = Keyring(rules, {})
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for secret in (SECRET, "sk_1234567890123456", "nobody"):
        calls.clear()
        keyring.identify(secret)
        assert calls == [(32, 32)] * 4  # two server keys, two keys


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("  - {id: k, scopes: [console]}\n", "give exactly one of secret_env"),
        (
            f"  - {{id: k, secret_env: K, sha256: {DIGEST}, scopes: [console]}}\n",
            "give exactly one of secret_env",
        ),
        ("  - {id: k, sha256: abc, scopes: [console]}\n", "keys[0].sha256"),
        ("  - {id: k, secret_env: K, scopes: []}\n", "keys[0].scopes"),
        ("  - {id: k, secret_env: K, scopes: [admin]}\n", "'admin' is not a scope"),
        ("  - {id: k, secret_env: K, scopes: [ingest:gamma]}\n", "unknown site"),
        ("  - {id: k, secret: hunter2hunter2hunter2, scopes: [console]}\n", "keys[0].secret"),
        (
            "  - {id: k, secret_env: K, scopes: [console]}\n"
            "  - {id: k, secret_env: L, scopes: [console]}\n",
            "keys: 'k' appears twice",
        ),
    ],
    ids=[
        "no-secret",
        "two-secrets",
        "bad-hash",
        "no-scopes",
        "bad-scope",
        "unknown-site",
        "clear-secret",
        "duplicate-id",
    ],
)
def test_what_cannot_be_a_key_is_refused_naming_the_field(keys: str, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(rules_with(keys), "rules.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("rules.yaml:")


def test_new_secret_gives_a_secret_and_its_hash() -> None:
    secret, digest = new_secret()
    assert secret.startswith("mak_") and len(secret) > 40
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert new_secret()[0] != secret
