"""Contact ids and identifier hygiene: the one place emails are normalised and judged.

Example::

    >>> normalize_email("  Ana.Lopez@Example.COM ")
    'ana.lopez@example.com'
    >>> str(contact_id_for("ana.lopez@acme.io"))  # doctest: +SKIP
    '…uuid5(CONTACT_NAMESPACE, "ana.lopez@acme.io")…'
    >>> email_rejection("noreply@acme.io")
    'placeholder address (noreply)'
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid

#: Fixed namespace of contact ids: ``contact_id = uuid5(CONTACT_NAMESPACE, normalized_email)``.
CONTACT_NAMESPACE = uuid.UUID("7f25ab20-4a82-5c35-9e83-f84177e3c6b9")

MAX_EMAIL_LENGTH = 254

# Deliberately simple: one @, no spaces, a dotted domain with a 2+ letter TLD. Full RFC 5322
# accepts addresses no marketer can send to; mailbox existence is the ESP's job.
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
_NO_REPLY = re.compile(r"^(no|do[-_.]?not|dont)[-_.]?reply")
_PLACEHOLDER_LOCALS = frozenset(
    {
        "test",
        "tester",
        "testing",
        "asdf",
        "asd",
        "qwerty",
        "foo",
        "bar",
        "foobar",
        "xxx",
        "abc",
        "abc123",
        "123",
        "1234",
        "12345",
        "123456",
        "none",
        "null",
        "undefined",
        "nobody",
        "example",
        "sample",
        "fake",
        "dummy",
        "email",
        "mail",
        "user",
        "username",
        "name",
        "your.name",
        "yourname",
        "youremail",
        "your.email",
        "you",
        "me",
        "na",
        "n.a",
        "noemail",
        "no.email",
        "no-email",
        "placeholder",
    }
)
_PLACEHOLDER_DOMAINS = frozenset(
    {
        "test.com",
        "example.com",
        "example.org",
        "example.net",
        "domain.com",
        "email.com",
        "yourdomain.com",
        "yourcompany.com",
        "company.com",
        "mail.com.invalid",
        "asdf.com",
        "test.test",
        "foo.com",
        "bar.com",
        "xxx.com",
        "none.com",
        "null.com",
        "fake.com",
        "noemail.com",
        "sample.com",
        "placeholder.com",
    }
)
_RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost", "local"})

_GARBAGE_IDENTIFIERS = frozenset(
    {
        "",
        "null",
        "undefined",
        "none",
        "nil",
        "nan",
        "0",
        "-1",
        "[object object]",
        "false",
        "true",
        "n/a",
        "na",
        "unknown",
        "anonymous",
        "(null)",
        "<nil>",
        "{}",
        "[]",
        "nul",
        "00000000-0000-0000-0000-000000000000",
    }
)
_QUOTES = "\"'`"


def normalize_email(raw: str) -> str:
    """NFKC, trimmed, lower-cased: the form contact ids are derived from."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


def contact_id_for(email: str) -> uuid.UUID:
    """The canonical contact id of an email address (normalised first)."""
    return uuid.uuid5(CONTACT_NAMESPACE, normalize_email(email))


#: Stage 1 keeps what it knows of a site's ``user_id`` (Segment's ``userId``: which contact it
#: names) under this key, in the same key space as cookies: a call that carries only a
#: ``user_id`` is keyed by it on ``ma.events``.
USER_KEY_PREFIX = "user:"


def user_key(site_id: str, user_id: str) -> str:
    """The ``ma.events`` key and stage-1 state key of a site's ``user_id``."""
    return f"{USER_KEY_PREFIX}{site_id}:{user_id}"


def is_user_key(key: str) -> bool:
    return key.startswith(USER_KEY_PREFIX)


def new_id() -> str:
    """A new random UUID (version 4) as canonical text, as ``str(uuid.uuid4())`` gives it in
    twice the time: event ids and new ``ma_aid`` cookies, on the collector's hot path."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def email_rejection(email: str) -> str | None:
    """Why this (already normalised) email must not identify anyone, or ``None`` if it may."""
    if is_garbage_identifier(email):
        return "blank or placeholder value"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"longer than {MAX_EMAIL_LENGTH} characters"
    if not _EMAIL.match(email) or ".." in email:
        return "not an email address"
    local, _, domain = email.partition("@")
    if _NO_REPLY.match(local):
        return "placeholder address (noreply)"
    if local in _PLACEHOLDER_LOCALS and (domain in _PLACEHOLDER_DOMAINS or _is_mash(domain)):
        return "placeholder address"
    if domain in _PLACEHOLDER_DOMAINS:
        return f"placeholder domain ({domain})"
    if domain.rsplit(".", 1)[-1] in _RESERVED_TLDS:
        return "reserved test domain"
    if _is_mash(local) and _is_mash(domain.rsplit(".", 1)[0]):
        return "obviously fake address"
    return None


def is_garbage_identifier(value: object) -> bool:
    """True for ``null``, ``undefined``, ``0``, ``-1``, ``[object Object]``, blank or quoted."""
    if value is None:
        return True
    if not isinstance(value, str):
        return True
    text = value.strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0]:
        text = text[1:-1].strip()
    return text.lower() in _GARBAGE_IDENTIFIERS


def _is_mash(text: str) -> bool:
    """One character repeated (``aaa``, ``a.a``) or a keyboard run (``asdf``, ``qwerty``)."""
    letters = text.replace(".", "").replace("-", "")
    if not letters:
        return True
    if len(set(letters)) == 1:
        return True
    return letters in {"asdf", "asdfgh", "qwerty", "qwer", "zxcv", "abc", "abcd", "xyz", "aaa"}
