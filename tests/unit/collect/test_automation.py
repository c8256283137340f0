"""Judging email clicks and opens automated (CONTRACT §3, "Email security scanners")."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.collect.automation import (
    SCANNER_NETWORKS,
    BurstDetector,
    judge,
    parse_networks,
    scanner_network,
    scanner_user_agent,
)
from pipeline.rules.models import Identity

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
SENT = NOW - timedelta(hours=2)
RULES = Identity()
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 10; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
HUMAN_IP = "203.0.113.9"


def judged(**overrides: Any) -> str | None:
    args: dict[str, Any] = {
        "method": "GET",
        "user_agent": CHROME,
        "ip": HUMAN_IP,
        "issued_at": SENT,
        "now": NOW,
        "rules": RULES,
    }
    args.update(overrides)
    return judge(**args)


# --- people ---------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", [CHROME, SAFARI_IPHONE, FIREFOX, CUBOT_PHONE])
def test_a_normal_browser_click_is_human(agent: str) -> None:
    assert judged(user_agent=agent) is None


def test_a_click_without_ip_or_send_time_is_judged_on_the_rest() -> None:
    assert judged(ip=None, issued_at=None) is None


def test_a_post_is_human() -> None:
    assert judged(method="post") is None


@pytest.mark.parametrize("agent", [GMAIL_PROXY, YAHOO_PROXY])
def test_opens_through_gmail_and_yahoo_image_proxies_are_human(agent: str) -> None:
    assert judged(kind="open", user_agent=agent) is None


def test_an_open_seconds_after_sending_is_human() -> None:
    # Opens are not judged by time: a person with the mailbox open sees the mail at once.
    assert judged(kind="open", issued_at=NOW - timedelta(seconds=2)) is None


def test_an_unparsable_ip_is_ignored() -> None:
    assert judged(ip="not-an-ip") is None
    assert judged(ip="") is None


# --- each reason ----------------------------------------------------------------------------


def test_head_request_is_automated() -> None:
    assert judged(method="HEAD") == "head_request"
    assert judged(method="head", kind="open") == "head_request"


def test_an_unusual_method_is_automated() -> None:
    assert judged(method="OPTIONS") == "unusual_method:OPTIONS"


@pytest.mark.parametrize("agent", [None, "", "   "])
def test_no_user_agent_is_automated(agent: str | None) -> None:
    assert judged(user_agent=agent) == "no_user_agent"


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "Barracuda"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) BingPreview/1.0b", "Microsoft BingPreview"),
        ("Microsoft Office Existence Discovery", "Microsoft Office link check"),
        ("Proofpoint URL Defense", "Proofpoint"),
        ("Mimecast-LinkScanner/1.0", "Mimecast"),
        ("Cisco IronPort Web Security", "Cisco IronPort"),
        ("Symantec Web Isolation", "Symantec"),
        ("TrendMicro Email Security", "Trend Micro"),
        ("Sophos Email Link Checker", "Sophos"),
        ("FireEye ETP", "FireEye"),
        ("Fortinet FortiMail", "Fortinet"),
        ("Google-Safety; https://www.google.com", "Google Safe Browsing"),
        ("python-requests/2.32.3", "python-requests"),
        ("curl/8.5.0", "curl"),
        ("Wget/1.21.4", "wget"),
        ("Go-http-client/2.0", "Go-http-client"),
        ("Java/17.0.2", "Java"),
        (CHROME.replace("Chrome/", "HeadlessChrome/"), "HeadlessChrome"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Slack"),
        ("facebookexternalhit/1.1", "Facebook"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
        ("Mozilla/5.0 (compatible; AhrefsBot/7.0)", "bot"),
        ("Mozilla/5.0 (compatible; bot)", "bot"),
        ("Mozilla/5.0 (compatible; Baiduspider/2.0)", "spider"),
        ("SomeCrawler 3.1", "crawler"),
        ("Mozilla/5.0 (compatible; LinkCheck; +https://x.example/about)", "bot_url"),
    ],
)
def test_known_scanner_user_agents_are_automated(agent: str, label: str) -> None:
    assert judged(user_agent=agent) == f"scanner_user_agent:{label}"


def test_user_agent_matching_ignores_case() -> None:
    assert judged(user_agent="BARRACUDA") == "scanner_user_agent:Barracuda"


def test_configured_user_agents_are_automated_and_labelled_by_their_text() -> None:
    rules = Identity(scanner_user_agents=["Acme-LinkGuard"])
    assert judged(user_agent="acme-linkguard/2 (like Chrome)", rules=rules) == (
        "scanner_user_agent:Acme-LinkGuard"
    )
    assert judged(user_agent=CHROME, rules=rules) is None


def test_apple_mail_privacy_protection_opens_are_automated() -> None:
    assert judged(kind="open", user_agent="Mozilla/5.0") == "apple_mail_privacy_protection"


def test_a_click_with_the_bare_mozilla_agent_is_automated() -> None:
    assert judged(user_agent="Mozilla/5.0") == "bare_user_agent"


@pytest.mark.parametrize(
    ("ip", "label"),
    [
        ("40.92.10.20", "Microsoft"),
        ("40.93.255.1", "Microsoft"),
        ("40.107.3.4", "Microsoft"),
        ("52.103.1.1", "Microsoft"),
        ("104.47.127.255", "Microsoft"),
        ("2a01:111:f400:fe00::1", "Microsoft"),
        ("::ffff:40.107.3.4", "Microsoft"),
        ("148.163.150.1", "Proofpoint"),
        ("207.211.30.44", "Mimecast"),
        ("64.235.150.2", "Barracuda"),
    ],
)
def test_known_scanner_networks_are_automated(ip: str, label: str) -> None:
    assert judged(ip=ip) == f"scanner_network:{label}"


@pytest.mark.parametrize("ip", ["40.94.0.1", "104.47.128.1", "148.163.160.1", "2a01:111:f401::1"])
def test_addresses_next_to_scanner_networks_are_human(ip: str) -> None:
    assert judged(ip=ip) is None


# Addresses in and around each built-in network (its supernet four times its size).
_NEAR_SCANNERS = st.sampled_from(SCANNER_NETWORKS).flatmap(
    lambda pair: st.ip_addresses(network=ipaddress.ip_network(pair[1]).supernet(prefixlen_diff=2))
)


@given(address=_NEAR_SCANNERS)
def test_an_address_is_in_a_scanner_network_exactly_when_ipaddress_says_so(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    expected = next(
        (label for label, cidr in SCANNER_NETWORKS if address in ipaddress.ip_network(cidr)), None
    )
    assert scanner_network(str(address)) == expected


def test_configured_networks_are_automated_and_labelled_by_their_range() -> None:
    rules = Identity(scanner_networks=["198.51.100.0/24", "2001:db8::/32"])
    assert judged(ip="198.51.100.77", rules=rules) == "scanner_network:198.51.100.0/24"
    assert judged(ip="2001:db8::5", rules=rules) == "scanner_network:2001:db8::/32"
    assert judged(ip=HUMAN_IP, rules=rules) is None


def test_an_invalid_configured_network_is_skipped_when_judging() -> None:
    # The rules loader refuses such a file; judging must not fail even if one slips through.
    rules = Identity.model_construct(scanner_networks=["nonsense", "198.51.100.0/24"])
    assert judged(ip="198.51.100.1", rules=rules) == "scanner_network:198.51.100.0/24"


def test_a_click_within_seconds_of_sending_is_automated() -> None:
    assert judged(issued_at=NOW - timedelta(seconds=9)) == "clicked_within_10s_of_send"


def test_a_click_at_the_threshold_is_human() -> None:
    assert judged(issued_at=NOW - timedelta(seconds=10)) is None


def test_a_click_before_the_send_time_counts_as_within_it() -> None:
    # The sender's clock is ahead of the collector's: still seconds from sending.
    assert judged(issued_at=NOW + timedelta(seconds=3)) == "clicked_within_10s_of_send"


def test_the_send_time_threshold_comes_from_the_rules() -> None:
    rules = Identity(scanner_click_seconds=2.5)
    assert judged(issued_at=NOW - timedelta(seconds=2), rules=rules) == (
        "clicked_within_2.5s_of_send"
    )
    assert judged(issued_at=NOW - timedelta(seconds=3), rules=rules) is None
    off = Identity(scanner_click_seconds=0)
    assert judged(issued_at=NOW, rules=off) is None


def test_head_is_reported_before_other_reasons() -> None:
    assert judged(method="HEAD", user_agent=None, ip="40.92.0.1", issued_at=NOW) == "head_request"


# --- helpers the rules loader can use -------------------------------------------------------


def test_parse_networks_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"scanner_networks\[1\]: 'nonsense'"):
        parse_networks(["10.0.0.0/8", "nonsense"])
    assert [str(n) for n in parse_networks(["10.1.2.3/8"])] == ["10.0.0.0/8"]


def test_built_in_networks_parse() -> None:
    assert len(parse_networks(cidr for _, cidr in SCANNER_NETWORKS)) == len(SCANNER_NETWORKS)


def test_helpers_answer_without_judging_the_rest() -> None:
    assert scanner_user_agent(CHROME) is None
    assert scanner_network("40.92.0.1") == "Microsoft"


# --- many links of one mail at once ---------------------------------------------------------


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def test_distinct_links_of_one_mail_clicked_within_the_window_are_a_burst() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    assert detector.observe("c1", "spring", "hero", seconds(0)) is None
    assert detector.observe("c1", "spring", "pricing", seconds(0.5)) is None
    assert detector.observe("c1", "spring", "footer", seconds(1.5)) == "many_links_at_once"
    assert detector.observe("c1", "spring", "logo", seconds(1.8)) == "many_links_at_once"


def test_links_clicked_further_apart_than_the_window_are_human() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    assert detector.observe("c1", "spring", "hero", seconds(0)) is None
    assert detector.observe("c1", "spring", "pricing", seconds(1.5)) is None
    assert detector.observe("c1", "spring", "footer", seconds(3.0)) is None
    assert detector.observe("c1", "spring", "logo", seconds(6.0)) is None


def test_the_same_link_clicked_repeatedly_is_not_a_burst() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    for n in range(10):
        assert detector.observe("c1", "spring", "hero", seconds(n * 0.1)) is None


def test_links_of_different_mails_or_contacts_do_not_add_up() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    assert detector.observe("c1", "spring", "hero", seconds(0)) is None
    assert detector.observe("c1", "autumn", "pricing", seconds(0.1)) is None
    assert detector.observe("c2", "spring", "footer", seconds(0.2)) is None


def test_clicks_without_campaign_or_link_are_not_judged() -> None:
    detector = BurstDetector(Identity(burst_clicks=2, burst_seconds=2))
    assert detector.observe("c1", None, "hero", seconds(0)) is None
    assert detector.observe("c1", None, "pricing", seconds(0.1)) is None
    assert detector.observe("c1", "spring", None, seconds(0.2)) is None
    assert detector.observe("c1", "spring", None, seconds(0.3)) is None
    assert len(detector) == 0


def test_slightly_out_of_order_clicks_still_count() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    assert detector.observe("c1", "spring", "hero", seconds(1.0)) is None
    assert detector.observe("c1", "spring", "pricing", seconds(0.2)) is None
    assert detector.observe("c1", "spring", "footer", seconds(1.1)) == "many_links_at_once"


def test_replaced_rules_apply_to_the_next_click() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    detector.observe("c1", "spring", "hero", seconds(0))
    detector.rules = Identity(burst_clicks=2, burst_seconds=2)
    assert detector.observe("c1", "spring", "pricing", seconds(0.5)) == "many_links_at_once"


def test_idle_mails_are_forgotten() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
    for n in range(1000):
        detector.observe(f"c{n}", "spring", "hero", seconds(n * 10))
    assert len(detector) == 1


def test_memory_stays_bounded_by_max_mails() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2), max_mails=100)
    for n in range(10_000):
        detector.observe(f"c{n}", "spring", "hero", seconds(n * 0.0001))
    assert len(detector) == 100


def test_links_per_mail_stay_bounded() -> None:
    detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2), max_links_per_mail=8)
    for n in range(1000):
        detector.observe("c1", "spring", f"link-{n}", seconds(n * 0.001))
    assert len(detector._mails[("c1", "spring")]) == 8


def test_the_least_recently_clicked_mail_is_dropped_first() -> None:
    detector = BurstDetector(Identity(burst_clicks=2, burst_seconds=60), max_mails=2)
    detector.observe("c1", "spring", "hero", seconds(0))
    detector.observe("c2", "spring", "hero", seconds(1))
    detector.observe("c1", "spring", "hero", seconds(2))  # c1 is now the most recent
    detector.observe("c3", "spring", "hero", seconds(3))  # evicts c2
    assert detector.observe("c1", "spring", "pricing", seconds(4)) == "many_links_at_once"
    assert detector.observe("c2", "spring", "pricing", seconds(4)) is None


def test_naive_times_are_refused() -> None:
    detector = BurstDetector(RULES)
    with pytest.raises(ValueError, match="timezone-aware"):
        detector.observe("c1", "spring", "hero", datetime(2026, 1, 1))


def test_only_scanners_and_previews_prefetch_an_unsubscribe_link() -> None:
    from pipeline.collect.automation import prefetched

    assert not prefetched(None)
    assert not prefetched("scanner_user_agent:curl")
    assert not prefetched("scanner_user_agent:python-requests")
    for reason in ("scanner_user_agent:Proofpoint", "scanner_user_agent:Slack", "head_request",
                   "scanner_user_agent:HeadlessChrome", "scanner_network:Microsoft",
                   "clicked_within_10s_of_send", "no_user_agent", "bot"):  # fmt: skip
        assert prefetched(reason), reason
