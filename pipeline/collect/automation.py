"""Is this email click or open a person, or a machine? (CONTRACT §3, "Email security scanners")

Mail security gateways fetch every link of a message within seconds of delivery, and some mail
clients prefetch images. Such requests are still recorded, flagged ``automated: true`` with the
reason returned here, but never link a cookie, score or trigger. Pure functions, no I/O.

Reasons, first match wins:

- ``head_request``                     a ``HEAD`` request (link checkers; people send ``GET``)
- ``unusual_method:<METHOD>``          anything but ``GET`` and ``POST``
- ``no_user_agent``                    no or blank ``User-Agent``
- ``scanner_user_agent:<label>``       a known scanner, bot or HTTP library
                                       (``SCANNER_USER_AGENTS``, generic bot patterns) or a
                                       ``rules.scanner_user_agents`` entry
- ``apple_mail_privacy_protection``    an open with the bare ``Mozilla/5.0`` agent of Apple Mail
                                       Privacy Protection, which prefetches every image on delivery
- ``bare_user_agent``                  a click with that bare agent: no real browser sends it
- ``scanner_network:<label>``          from a known scanner network (``SCANNER_NETWORKS``) or a
                                       ``rules.scanner_networks`` range
- ``clicked_within_<n>s_of_send``      a click less than ``rules.scanner_click_seconds`` after the
                                       token was issued (also when the sender's clock is ahead)
- ``many_links_at_once``               from ``BurstDetector``: many links of one mail at once

Image proxies: Gmail's ``GoogleImageProxy`` and Yahoo's ``YahooMailProxy`` fetch a mail's images
when the recipient opens it (then cache them), so such opens are judged human: they are real
opens, merely without the person's IP or cookie. Apple's proxy prefetches regardless of whether
anyone reads the mail, so its opens are automated. Opens are not judged by time since sending:
a person with the mailbox open often sees a message within seconds; only clicks are.

The built-in user agents and networks are well-known examples, not a complete registry; extend
them per deployment with ``identity.scanner_user_agents`` and ``identity.scanner_networks``.

Example::

    judge(method="GET", user_agent="Mozilla/5.0 (compatible; Barracuda Sentinel)", ip=None,
          issued_at=None, now=now, rules=rules.identity)  # 'scanner_user_agent:Barracuda'
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Literal

from pipeline.rules.models import Identity

Kind = Literal["click", "open"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``(label, lower-case substring)`` of user agents judged automated wherever they appear.
SCANNER_USER_AGENTS: tuple[tuple[str, str], ...] = (
    # Mail security gateways and link-rewriting services.
    ("Microsoft BingPreview", "bingpreview"),
    ("Microsoft Office link check", "microsoft office existence discovery"),
    ("Microsoft Office link check", "microsoft office protocol discovery"),
    ("Microsoft Defender", "safelinks"),
    ("Microsoft Defender", "microsoft-atp"),
    ("Proofpoint", "proofpoint"),
    ("Mimecast", "mimecast"),
    ("Barracuda", "barracuda"),
    ("Cisco IronPort", "ironport"),
    ("Symantec", "symantec"),
    ("Symantec", "messagelabs"),
    ("Symantec", "broadcom"),
    ("Trend Micro", "trend micro"),
    ("Trend Micro", "trendmicro"),
    ("Sophos", "sophos"),
    ("FireEye", "fireeye"),
    ("Fortinet", "fortinet"),
    ("Fortinet", "fortiguard"),
    ("Forcepoint", "forcepoint"),
    ("Forcepoint", "websense"),
    ("Zscaler", "zscaler"),
    ("Google Safe Browsing", "google-safety"),
    # Link previews in chat apps (a forwarded link, not the recipient reading it).
    ("Slack", "slackbot"),
    ("Microsoft Teams", "skypeuripreview"),
    ("Facebook", "facebookexternalhit"),
    ("WhatsApp", "whatsapp/"),
    ("Telegram", "telegrambot"),
    # HTTP libraries and headless browsers.
    ("python-requests", "python-requests"),
    ("python-urllib", "python-urllib"),
    ("python-httpx", "python-httpx"),
    ("aiohttp", "aiohttp"),
    ("curl", "curl/"),
    ("wget", "wget/"),
    ("Go-http-client", "go-http-client"),
    ("Java", "java/"),
    ("Apache-HttpClient", "apache-httpclient"),
    ("libwww-perl", "libwww-perl"),
    ("node-fetch", "node-fetch"),
    ("axios", "axios/"),
    ("HeadlessChrome", "headlesschrome"),
    ("PhantomJS", "phantomjs"),
)

# Generic crawler markers. "bot" only as a word or before '/' or ';' (Googlebot/2.1,
# AhrefsBot/7.0, "compatible; bot"), so phone names such as "CUBOT P30" stay human.
#: Labels above of plain HTTP libraries: a program a person runs, not a link scanner. A click
#: from one is judged automated (no link, no score), but a ``GET /u/{token}`` from one
#: unsubscribes at once, as a person's would (``prefetched``).
HTTP_LIBRARIES = frozenset({
    "python-requests", "python-urllib", "python-httpx", "aiohttp", "curl", "wget",
    "Go-http-client", "Java", "Apache-HttpClient", "libwww-perl", "node-fetch", "axios",
})  # fmt: skip


def prefetched(reason: str | None) -> bool:
    """Is a ``GET`` judged automated for ``reason`` (``judge``'s) one that a link scanner or a
    preview makes by itself, so that it must not unsubscribe? (An HTTP library's is not.)"""
    if reason is None:
        return False
    label = reason.removeprefix("scanner_user_agent:")
    return not (label != reason and label in HTTP_LIBRARIES)


_GENERIC_AGENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bot", re.compile(r"bot[/;]|\bbot\b")),
    ("spider", re.compile(r"spider")),
    ("crawler", re.compile(r"crawl")),
    ("bot_url", re.compile(r"\+https?://")),  # "(compatible; X; +http://x.com/bot.html)"
)

#: Apple Mail Privacy Protection fetches images with exactly this agent.
BARE_USER_AGENT = "mozilla/5.0"

#: ``(label, CIDR)`` of well-known mail-security networks: examples from the vendors' published
#: outbound ranges (e.g. ``spf.protection.outlook.com``), not a complete list.
SCANNER_NETWORKS: tuple[tuple[str, str], ...] = (
    ("Microsoft", "40.92.0.0/15"),
    ("Microsoft", "40.107.0.0/16"),
    ("Microsoft", "52.100.0.0/14"),
    ("Microsoft", "104.47.0.0/17"),
    ("Microsoft", "2a01:111:f400::/48"),
    ("Proofpoint", "148.163.128.0/19"),
    ("Proofpoint", "67.231.144.0/20"),
    ("Mimecast", "207.211.30.0/24"),
    ("Mimecast", "205.139.110.0/24"),
    ("Barracuda", "64.235.144.0/20"),
    ("Barracuda", "209.222.80.0/21"),
)
#: ``(label, IP version, first address, last address)``: a network as integers to compare.
Span = tuple[str, int, int, int]


def _span(label: str, network: Network) -> Span:
    return label, network.version, int(network.network_address), int(network.broadcast_address)


_BUILT_IN_SPANS: tuple[Span, ...] = tuple(
    _span(label, ipaddress.ip_network(cidr)) for label, cidr in SCANNER_NETWORKS
)


def judge(
    *,
    method: str,
    user_agent: str | None,
    ip: str | None,
    issued_at: datetime | None,
    now: datetime,
    rules: Identity,
    kind: Kind = "click",
) -> str | None:
    """Why this email click (or open, ``kind="open"``) is automated, or ``None`` for a person.

    ``issued_at`` is the token's issue time (the send time); ``now`` the receive time.

    Example::

        judge(method="HEAD", user_agent="Mozilla/5.0 …", ip="203.0.113.9", issued_at=None,
              now=now, rules=Identity())  # 'head_request'
    """
    verb = method.strip().upper()
    if verb == "HEAD":
        return "head_request"
    if verb not in ("GET", "POST"):
        return f"unusual_method:{verb[:16]}"
    agent = (user_agent or "").strip().lower()
    if not agent:
        return "no_user_agent"
    label = scanner_user_agent(agent, rules.scanner_user_agents)
    if label:
        return f"scanner_user_agent:{label}"
    if agent == BARE_USER_AGENT:
        return "apple_mail_privacy_protection" if kind == "open" else "bare_user_agent"
    if ip:
        label = scanner_network(ip, rules.scanner_networks)
        if label:
            return f"scanner_network:{label}"
    if kind == "click" and issued_at is not None and rules.scanner_click_seconds > 0:
        elapsed = (now - issued_at).total_seconds()
        if elapsed < rules.scanner_click_seconds:
            return f"clicked_within_{_seconds_text(rules.scanner_click_seconds)}s_of_send"
    return None


def scanner_user_agent(user_agent: str, extra: Iterable[str] = ()) -> str | None:
    """The label of the scanner or bot a user agent names, or ``None``; case-insensitive.

    A configured ``extra`` substring is its own label: ``scanner_user_agent("X-Scan", ["x-scan"])``
    is ``'x-scan'``.
    """
    agent = user_agent.lower()
    for substring in extra:
        if substring and substring.lower() in agent:
            return substring
    for label, substring in SCANNER_USER_AGENTS:
        if substring in agent:
            return label
    for label, pattern in _GENERIC_AGENTS:
        if pattern.search(agent):
            return label
    return None


def scanner_network(ip: str, extra: Iterable[str] = ()) -> str | None:
    """The label of the scanner network ``ip`` is in, or ``None`` (also for unparsable IPs).

    Configured ``extra`` ranges are labelled by their CIDR text; IPv4-mapped IPv6 addresses are
    matched as IPv4.
    """
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    version, value = address.version, int(address)
    for label, span_version, first, last in _spans(tuple(extra)):
        if span_version == version and first <= value <= last:
            return label
    return None


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """Parse CIDR ranges (host bits allowed); ``ValueError`` names the entry that is wrong.

    For validating ``identity.scanner_networks`` when the rules file is loaded.
    """
    networks = []
    for index, cidr in enumerate(cidrs):
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"scanner_networks[{index}]: {cidr!r} is not a CIDR range like 192.0.2.0/24"
            ) from None
    return networks


@lru_cache(maxsize=16)
def _spans(cidrs: tuple[str, ...]) -> tuple[Span, ...]:
    """The configured ranges, labelled by their CIDR text, then the built-in ones."""
    # Invalid entries are skipped here: judging must never fail a request. The rules loader is
    # the place to refuse them (``parse_networks``).
    parsed = []
    for cidr in cidrs:
        try:
            parsed.append(_span(cidr, ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            continue
    return (*parsed, *_BUILT_IN_SPANS)


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class BurstDetector:
    """Flags a click when many distinct links of one mail are clicked at once (a scanner).

    ``observe`` returns ``"many_links_at_once"`` when at least ``rules.burst_clicks`` distinct
    links of one ``(contact, campaign)`` mail were clicked within ``rules.burst_seconds`` of each
    other, this click included; the clicks before the threshold are not flagged retroactively.
    Clicks without a campaign or link id are not judged.

    Best effort: the memory is per collector process (clicks of one mail spread over several
    collectors may go unnoticed) and bounded: mails idle longer than the window are forgotten,
    and at most ``max_mails`` are kept (least recently clicked dropped first). Not thread-safe;
    one detector per event loop. Replace ``rules`` when the rules file is reloaded.

    Example::

        detector = BurstDetector(Identity(burst_clicks=3, burst_seconds=2))
        detector.observe(cid, "spring", "hero", at)  # None
        detector.observe(cid, "spring", "pricing", at + timedelta(seconds=0.5))  # None
        detector.observe(cid, "spring", "footer", at + timedelta(seconds=1))
        # 'many_links_at_once'
    """

    def __init__(
        self, rules: Identity, *, max_mails: int = 100_000, max_links_per_mail: int = 64
    ) -> None:
        if max_mails < 1 or max_links_per_mail < 1:
            raise ValueError("max_mails and max_links_per_mail must be at least 1")
        self.rules = rules
        self.max_mails = max_mails
        self.max_links_per_mail = max_links_per_mail
        # (contact, campaign) → {link_id: epoch seconds of its latest click}, least recent first.
        self._mails: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many mails are remembered."""
        return len(self._mails)

    def observe(
        self, contact_id: str, campaign_id: str | None, link_id: str | None, at: datetime
    ) -> str | None:
        """Record a click; ``"many_links_at_once"`` if it completes a burst, else ``None``."""
        if at.tzinfo is None:
            raise ValueError("at: must be timezone-aware")
        if campaign_id is None or link_id is None:
            return None
        window = self.rules.burst_seconds
        t = at.timestamp()
        self._forget_idle(t - window)
        key = (contact_id, campaign_id)
        links = self._mails.get(key)
        if links is None:
            links = self._mails[key] = {}
            while len(self._mails) > self.max_mails:
                self._mails.popitem(last=False)
        else:
            self._mails.move_to_end(key)
        # Keep only the links clicked within the window of this click (either side: the clock
        # of arrival is not strictly ordered).
        for other in [k for k, seen in links.items() if abs(t - seen) > window]:
            del links[other]
        links[link_id] = t
        limit = max(self.max_links_per_mail, self.rules.burst_clicks)
        while len(links) > limit:
            del links[min(links, key=links.__getitem__)]
        return "many_links_at_once" if len(links) >= self.rules.burst_clicks else None

    def _forget_idle(self, before: float) -> None:
        """Drop the least recently clicked mails whose latest click is older than ``before``."""
        while self._mails:
            key, links = next(iter(self._mails.items()))
            if links and max(links.values()) >= before:
                return
            del self._mails[key]
