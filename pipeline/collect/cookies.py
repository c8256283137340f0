"""The ``ma_aid`` cookie as the collector reads and sets it (CONTRACT §1).

The JS tag (``static/t.js``) keeps ``ma_aid`` on the site's registrable domain (or its
``data-cookie-domain``), so the site's pages and a collector on a subdomain share one cookie. The
collector sets the same cookie on click and pixel answers that arrive without one: on the site's
``cookie_domain`` (rules file) when the collector's host lies within it, host-only otherwise.

A browser may send two ``ma_aid`` values (a host-only one and a domain one, or an old garbage
value beside a new one); the first UUID-shaped value wins, as in the tag.

Example::

    aid, seen = read_anonymous_id(request.headers.getall("Cookie", []))  # ('3b2c…', True)
    domain = cookie_domain(site, request.host)  # 'acme.io' on collect.acme.io, else None
    set_anonymous_id(response, new_aid, domain=domain, secure=True, replace_garbage=seen)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web

from pipeline.identity import is_garbage_identifier
from pipeline.rules import Site

COOKIE = "ma_aid"
#: Two years, as the tag sets it (browsers may cap it, Chromium at 400 days).
MAX_AGE = 2 * 365 * 24 * 3600

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUOTES = "\"'"


def is_uuid_text(value: str) -> bool:
    """True for hyphenated UUID text (any version), the only shape ``ma_aid`` may take."""
    return _UUID.fullmatch(value) is not None and not is_garbage_identifier(value)


def read_anonymous_id(cookie_headers: Iterable[str]) -> tuple[str | None, bool]:
    """The first UUID-shaped ``ma_aid`` in these ``Cookie`` header values, and whether any
    ``ma_aid`` (valid or not) was sent at all.

    Example::

        read_anonymous_id(["ma_aid=undefined; ma_aid=3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"])
        # ('3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01', True)
    """
    seen = False
    for header in cookie_headers:
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            if not sep or name.strip() != COOKIE:
                continue
            seen = True
            value = value.strip()
            if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
                value = value[1:-1]
            if is_uuid_text(value):
                return value, True
    return None, seen


def cookie_domain(site: Site | None, host: str | None) -> str | None:
    """The ``Domain`` attribute for ``ma_aid``: the site's ``cookie_domain`` when the request's
    host is that domain or one of its subdomains (a browser refuses any other), else ``None``
    (a host-only cookie)."""
    if site is None or site.cookie_domain is None or not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal: no domain cookies
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    name = name.rstrip(".")
    domain = site.cookie_domain
    if name == domain or name.endswith("." + domain):
        return domain
    return None


def set_anonymous_id(
    response: web.StreamResponse,
    anonymous_id: str,
    *,
    domain: str | None,
    secure: bool,
    replace_garbage: bool = False,
) -> None:
    """Set ``ma_aid`` as the tag does: 2 years, ``Path=/``, ``SameSite=Lax``, readable by the tag.

    ``replace_garbage``: the request carried an unusable ``ma_aid``; when the new cookie goes on
    a domain, the host-only leftover is expired too, or the browser would keep sending both.
    """
    response.set_cookie(
        COOKIE,
        anonymous_id,
        max_age=MAX_AGE,
        path="/",
        domain=domain,
        samesite="Lax",
        secure=secure,
        httponly=False,  # the tag reads it
    )
    if replace_garbage and domain:
        response.headers.add("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/")
