"""Serving the JS tag: gzip negotiation and ETags (pipeline.collect.tag)."""

from __future__ import annotations

import gzip

import pytest

from pipeline.collect.app import STATIC
from pipeline.collect.tag import Tag, accepts_gzip, not_modified


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip, deflate, br, zstd", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("identity", False),
        ("br", False),
        ("", False),
        ("gzip;q=nonsense", False),
        ("gzip;q=0, *", False),  # an explicit refusal beats the wildcard
    ],
)
def test_gzip_is_chosen_only_when_accepted(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_both_variants_hold_the_same_tag_under_different_etags() -> None:
    tag = Tag.load(STATIC / "t.js")
    zipped, encoding, zipped_etag = tag.variant("gzip")
    plain, none, plain_etag = tag.variant("")
    assert (encoding, none) == ("gzip", None)
    assert gzip.decompress(zipped) == plain == (STATIC / "t.js").read_bytes()
    assert zipped_etag != plain_etag
    assert Tag.load(STATIC / "t.js") == tag  # deterministic (no timestamp in the gzip header)


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("", False),
    ],
)
def test_if_none_match_is_compared_weakly(if_none_match: str, matches: bool) -> None:
    assert not_modified(if_none_match, '"abc"') is matches
