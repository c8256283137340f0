import pytest

from pipeline.rules import EventMatch, format_duration, parse_duration


@pytest.mark.parametrize(
    ("match", "event", "expected"),
    [
        (
            {"type": "page_view", "url": "/pricing*"},
            {"type": "page_view", "path": "/pricing"},
            True,
        ),
        (
            {"type": "page_view", "url": "/pricing*"},
            {"type": "page_view", "path": "/pricing/x"},
            True,
        ),
        (
            {"type": "page_view", "url": "/pricing*"},
            {"type": "page_view", "path": "/blog/pricing"},
            False,
        ),
        ({"url": "/blog/*/data*"}, {"type": "page_view", "path": "/blog/mkt/data-driven"}, True),
        ({"type": ["custom", "identify"]}, {"type": "identify"}, True),
        ({"type": "custom", "name": "trial_signup"}, {"type": "custom", "name": "other"}, False),
        ({"form_id": ["whitepaper", "ebook"]}, {"type": "form_submit", "form_id": "ebook"}, True),
        ({"campaign": "spring"}, {"type": "email_click", "campaign_id": "spring"}, True),
        (
            {"url": "https://shop.acme.io/*"},
            {"url": "https://shop.acme.io/cart", "path": "/cart"},
            True,
        ),
        ({}, {"type": "anything"}, True),
        # several globs, paths and whole URLs mixed: any one of them
        (
            {"url": ["/pricing*", "https://shop.acme.io/*", "/docs/?"]},
            {"url": "https://shop.acme.io/cart", "path": "/cart"},
            True,
        ),
        ({"url": ["/pricing*", "/docs/?"]}, {"path": "/docs/a"}, True),
        ({"url": ["/pricing*", "/docs/?"]}, {"path": "/docs/ab"}, False),
        ({"url": "https://shop.acme.io/*"}, {"url": "https://acme.io/x", "path": "/x"}, False),
        ({"url": "/pricing*"}, {"type": "page_view"}, False),  # no path at all
    ],
)
def test_event_matches(match: dict[str, object], event: dict[str, object], expected: bool) -> None:
    assert EventMatch.model_validate(match).matches(event) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1d12h", 129600),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "1", "d", "1x", "one day", "-1d"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30s, 15m, 2h, 1d, 1w"):
        parse_duration(text)
