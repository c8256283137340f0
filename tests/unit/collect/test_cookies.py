"""Reading and setting the ma_aid cookie (pipeline.collect.cookies)."""

from __future__ import annotations

import pytest
from aiohttp import web

from pipeline.collect.cookies import cookie_domain, read_anonymous_id, set_anonymous_id
from pipeline.rules.models import Site

AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"
OTHER = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"


def site(cookie_domain: str | None = None) -> Site:
    return Site(
        id="acme",
        write_key="wk_12345678",
        server_key="sk_1234567890123456",
        cookie_domain=cookie_domain,
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], (None, False)),
        (["other=1"], (None, False)),
        ([f"ma_aid={AID}"], (AID, True)),
        ([f"a=b; ma_aid={AID}; c=d"], (AID, True)),
        ([f"ma_aid={AID}; ma_aid={OTHER}"], (AID, True)),  # the first of two
        ([f"ma_aid=undefined; ma_aid={OTHER}"], (OTHER, True)),  # the first UUID-shaped one
        (["ma_aid=null", f"ma_aid={OTHER}"], (OTHER, True)),  # over several Cookie headers
        ([f'ma_aid="{AID}"'], (AID, True)),
        ([f"ma_aid={AID.upper()}"], (AID.upper(), True)),
        (["ma_aid=00000000-0000-0000-0000-000000000000"], (None, True)),
        (["ma_aid=----0123456789abcdef0123456789abcdef"], (None, True)),
        ([f"ma_aid={AID}x"], (None, True)),
        (["ma_aid"], (None, False)),
        ([f"xma_aid={AID}"], (None, False)),
        (["ma_aid=; ; ;=;"], (None, True)),
    ],
)
def test_the_first_uuid_shaped_cookie_value_wins(
    headers: list[str], expected: tuple[str | None, bool]
) -> None:
    assert read_anonymous_id(headers) == expected


@pytest.mark.parametrize(
    ("configured", "host", "domain"),
    [
        ("acme.io", "collect.acme.io", "acme.io"),
        ("acme.io", "collect.acme.io:8443", "acme.io"),
        ("acme.io", "ACME.IO.", "acme.io"),
        ("acme.io", "t.eu.acme.io", "acme.io"),
        ("acme.io", "collect.notacme.io", None),  # a browser would refuse the cookie
        ("acme.io", "acme.io.evil.example", None),
        ("acme.io", "127.0.0.1:8080", None),
        ("acme.io", "[::1]:8080", None),
        ("acme.io", "", None),
        (None, "collect.acme.io", None),  # not configured: host-only
    ],
)
def test_the_cookie_domain_applies_only_within_it(
    configured: str | None, host: str, domain: str | None
) -> None:
    assert cookie_domain(site(configured), host) == domain


def test_site_cookie_domains_are_normalised_and_checked() -> None:
    assert site(".Acme.IO").cookie_domain == "acme.io"
    for bad in ("localhost", "https://acme.io", "acme.io:443", "acme.io/", "a..io", "-acme.io"):
        with pytest.raises(ValueError, match="not a domain"):
            site(bad)


def test_the_cookie_is_set_as_the_tag_sets_it() -> None:
    response = web.Response()
    set_anonymous_id(response, AID, domain="acme.io", secure=True)
    (header,) = response.cookies.output(header="").strip().splitlines()
    assert header.strip().startswith(f"ma_aid={AID};")
    for attribute in ("Domain=acme.io", "Max-Age=63072000", "Path=/", "SameSite=Lax", "Secure"):
        assert attribute in header
    assert "HttpOnly" not in header  # the tag reads it


def test_a_garbage_host_only_cookie_is_expired_when_the_new_one_goes_on_a_domain() -> None:
    response = web.Response()
    set_anonymous_id(response, AID, domain="acme.io", secure=False, replace_garbage=True)
    assert response.headers.getall("Set-Cookie") == ["ma_aid=; Max-Age=0; Path=/"]
    host_only = web.Response()
    set_anonymous_id(host_only, AID, domain=None, secure=False, replace_garbage=True)
    assert "Set-Cookie" not in host_only.headers  # the new host-only cookie replaces it
