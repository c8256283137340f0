"""Who a request's key belongs to and what it may do (CONTRACT §1 "Keys").

A key of the rules file's ``keys:`` holds the scopes it lists; its secret is read from the
environment variable ``secret_env`` names, or known only by its ``sha256``. A site's
``server_key`` (deprecated) is a key with the one scope ``ingest:<site>``. Secrets are compared
as SHA-256 digests, each with ``hmac.compare_digest``, against every key (no early exit).

Example::

    keyring = rules.keyring                       # built once per loaded rules file
    credential = keyring.identify(token)          # None: not a key of this deployment
    if credential is not None and not credential.allows("contacts:write"):
        ...                                       # 403 naming the scope
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.rules.models import INGEST

if TYPE_CHECKING:
    from pipeline.rules.models import Rules

#: Shortest secret accepted from an environment variable (a site's server_key: 16 too).
MIN_SECRET = 16


@dataclass(frozen=True, slots=True)
class Credential:
    """An identified key: its id (as counted in ``/metrics``) and its scopes."""

    id: str
    scopes: frozenset[str]
    #: The site of a site's ``server_key``; None for keys of ``keys:``.
    site: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def ingest_sites(self) -> list[str]:
        """The sites this key may send events for, sorted."""
        return sorted(s[len(INGEST) :] for s in self.scopes if s.startswith(INGEST))


class Keyring:
    """The usable keys of one rules file, by the digest of their secret."""

    def __init__(self, rules: Rules, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._entries: list[tuple[bytes, Credential]] = []
        #: One line per key that cannot be used (its variable unset or too short).
        self.disabled: list[str] = []
        for site in rules.sites:
            scopes = frozenset({INGEST + site.id})
            self._entries.append(
                (_digest(site.server_key), Credential(f"server_key:{site.id}", scopes, site.id))
            )
        for key in rules.keys:
            if key.sha256 is not None:
                digest = bytes.fromhex(key.sha256)
            else:
                assert key.secret_env is not None  # the model requires one of the two
                secret = env.get(key.secret_env, "").strip()
                if len(secret) < MIN_SECRET:
                    state = "is not set" if not secret else f"is shorter than {MIN_SECRET}"
                    self.disabled.append(f"keys: {key.id!r} is disabled: ${key.secret_env} {state}")
                    continue
                digest = _digest(secret)
            self._entries.append((digest, Credential(key.id, frozenset(key.scopes))))

    def identify(self, secret: str) -> Credential | None:
        """The key whose secret this is, or None; compares with every key, in constant time."""
        if not secret:
            return None
        digest = _digest(secret)
        found: Credential | None = None
        for expected, credential in self._entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = credential
        return found


def new_secret(prefix: str = "mak_") -> tuple[str, str]:
    """A fresh random secret and the hex SHA-256 to put in the rules file as ``sha256``."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
