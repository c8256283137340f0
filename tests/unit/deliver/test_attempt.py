"""What an answer means for a webhook delivery, how long a retry waits, and the Standard
Webhooks signature (checked with the ``standardwebhooks`` library itself)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from pipeline.deliver.attempt import judge, retry_delay, signed_headers
from pipeline.rules import parse_rules
from pipeline.rules.loader import RulesError
from pipeline.rules.models import Backoff

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_signature_verifies_with_the_standard_webhooks_library() -> None:
    body = b'{"trigger_id":"t-1","rule":"r"}'
    at = datetime.now(UTC)
    headers = signed_headers(SECRET, "t-1", at, body)
    assert headers["webhook-id"] == "t-1"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {"trigger_id": "t-1", "rule": "r"}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, "delivered"), (204, "delivered"), (408, "retry"), (429, "retry"), (500, "retry"),
     (503, "retry"), (301, "dead"), (302, "dead"), (400, "dead"), (404, "dead"), (410, "dead")],
)  # fmt: skip
def test_each_answer_means_delivered_retry_or_dead(status: int, kind: str) -> None:
    assert judge(status).kind == kind


def test_retry_after_in_seconds_or_as_a_date_is_read() -> None:
    assert judge(503, "7").retry_after == 7.0
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    waited = judge(429, later).retry_after
    assert waited is not None and 25 < waited <= 30


def test_retries_double_from_first_up_to_max_with_twenty_percent_jitter() -> None:
    backoff = Backoff(first=timedelta(seconds=5), max=timedelta(seconds=60))
    rng = random.Random(1)
    for attempt, base in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        delays = [retry_delay(attempt, backoff, rng) for _ in range(200)]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > base * 0.2  # really spread


DESTINATION = """
triggers:
  rules:
    - {id: r1, when: {event: {type: page_view}}, channel: email}
destinations:
  - {id: crm, url: "%s", rules: [r1], secret_env: CRM_SECRET}
"""


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example/ma", "http://127.0.0.1:9000/hook", "http://localhost/x",
     "http://127.0.0.2:8000/hook", "http://[::1]:9000/hook"],
)  # fmt: skip
def test_a_destination_takes_https_or_loopback_http(url: str) -> None:
    [destination] = parse_rules(DESTINATION % url).destinations
    assert destination.wants("r1", "email") and not destination.wants("r2", "email")
    assert destination.timeout == timedelta(seconds=10)
    assert destination.retry_for == timedelta(hours=24)


@pytest.mark.parametrize(
    "url", ["http://hooks.example/ma", "ftp://x/y", "hooks.example", "http://10.0.0.1/hook"]
)
def test_a_destination_refuses_plain_http_beyond_loopback(url: str) -> None:
    with pytest.raises(RulesError) as refused:
        parse_rules(DESTINATION % url, "rules.yaml")
    assert "rules.yaml:6: destinations[0].url: must be an https:// URL" in str(refused.value)


def test_a_destination_naming_an_unknown_rule_is_refused() -> None:
    text = (DESTINATION % "https://hooks.example/ma").replace("rules: [r1]", "rules: [nope]")
    with pytest.raises(RulesError) as refused:
        parse_rules(text, "rules.yaml")
    assert "unknown trigger rule 'nope'" in str(refused.value)


def test_a_secret_that_cannot_sign_is_named_before_any_attempt() -> None:
    """The deliverer makes such a job dead at once with this reason (it was retried every 5 s
    for ever, with no ma.deliveries record)."""
    from pipeline.deliver.attempt import secret_problem

    assert secret_problem("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") is None
    for bad in ("not-base64!!", "whsec_@@@"):
        problem = secret_problem(bad)
        assert problem is not None and problem.startswith("not a Standard Webhooks secret")


def test_a_destination_may_take_channels_instead_of_rules_but_not_both() -> None:
    by_channel = DESTINATION.replace("rules: [r1]", "channels: [sales, web]") % "https://h.example/"
    [destination] = parse_rules(by_channel).destinations
    assert destination.wants("any-rule", "sales") and destination.wants("r1", "web")
    assert not destination.wants("r1", "email")
    both = DESTINATION.replace("rules: [r1]", "rules: [r1], channels: [sales]")
    for text in (
        both % "https://h.example/",
        DESTINATION.replace("rules: [r1], ", "") % "https://h.example/",
    ):
        with pytest.raises(RulesError) as refused:
            parse_rules(text, "rules.yaml")
        assert "give exactly one of rules, channels" in str(refused.value)
