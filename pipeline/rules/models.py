"""The rules file (``MA_CONFIG``) as typed models: sites, identity limits, scoring, triggers,
segments and merge rules (CONTRACT §5). ``config/rules.yaml`` is a complete example.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.rules.durations import Duration
from pipeline.rules.matching import EventMatch

if TYPE_CHECKING:
    from pipeline.rules.keys import Keyring

RuleId = str
_R = TypeVar("_R")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}\.)+{_LABEL}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """Token bucket per client IP and site: ``per_second`` sustained, ``burst`` at once."""

    per_second: float = Field(default=50, gt=0)
    burst: int = Field(default=200, ge=1)


class Site(_Strict):
    """A tracked site: its keys, the origins its pages run on, where bad links land."""

    id: str = Field(pattern=_ID)
    write_key: str = Field(min_length=8, description="public, in browsers")
    server_key: str = Field(min_length=16, description="secret, for backends")
    allowed_origins: list[str] = Field(default_factory=list)
    fallback_url: str | None = Field(
        default=None, description="where a bad email link lands instead of a 400 page"
    )
    cookie_domain: str | None = Field(
        default=None,
        description=(
            "the domain the collector sets ma_aid on (e.g. acme.io): the one the tag uses, i.e. "
            "its data-cookie-domain or else the site's registrable domain; unset: host-only"
        ),
    )
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com")
        return value

    @field_validator("cookie_domain")
    @classmethod
    def _cookie_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.strip().lower().removeprefix(".")
        if not re.fullmatch(_DOMAIN, domain):
            raise ValueError(f"{value!r} is not a domain like acme.io (no scheme, port or path)")
        return domain

    @field_validator("fallback_url")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s]+$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


#: The scopes a key may hold (CONTRACT §1 "Keys"), besides ``ingest:<site>``.
CONTACTS_WRITE, SEGMENTS_READ, PROFILES_READ, CONSOLE = (
    "contacts:write",
    "segments:read",
    "profiles:read",
    "console",
)
SCOPES = (CONTACTS_WRITE, SEGMENTS_READ, PROFILES_READ, CONSOLE)
#: ``ingest:<site id>``: events for that site, server-only types included.
INGEST = "ingest:"


class ApiKey(_Strict):
    """A credential for backends and operators: an id, where its secret is, what it may do.

    The secret itself is never in the file: ``secret_env`` names the environment variable that
    holds it, or ``sha256`` is the hex SHA-256 of it (``ma-pipeline keys new`` makes both).
    """

    id: str = Field(pattern=_ID)
    secret_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="variable with the secret"
    )
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the secret"
    )
    scopes: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKey:
        if (self.secret_env is None) == (self.sha256 is None):
            raise ValueError("give exactly one of secret_env (a variable name) or sha256")
        return self

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if scope not in SCOPES and not re.fullmatch(INGEST + _ID[1:-1], scope):
                raise ValueError(
                    f"{scope!r} is not a scope; scopes are ingest:<site id>, {', '.join(SCOPES)}"
                )
        return value


class Identity(_Strict):
    """Fan-in limits and scanner detection (CONTRACT §3)."""

    max_relinks: int = Field(default=3, ge=0, description="re-links of one cookie per period")
    relink_period: Duration = timedelta(days=1)
    max_cookies_per_contact: int = Field(default=20, ge=1)
    scanner_click_seconds: float = Field(
        default=10, ge=0, description="a click this soon after the link was issued is a scanner"
    )
    burst_clicks: int = Field(default=3, ge=2, description="links of one mail clicked at once")
    burst_seconds: float = Field(default=2, gt=0)
    scanner_user_agents: list[str] = Field(
        default_factory=list, description="extra user-agent substrings judged automated"
    )
    scanner_networks: list[str] = Field(
        default_factory=list, description="extra CIDR ranges judged automated"
    )

    @field_validator("scanner_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR range like 192.0.2.0/24") from exc
        return value


class Cap(_Strict):
    max: int = Field(ge=1)
    per: Duration


class ScoringRule(_Strict):
    """Points for events matching ``match``; ``cap`` limits how many count per period."""

    id: RuleId = Field(pattern=_ID)
    match: EventMatch
    points: float
    cap: Cap | None = None


class AttributeRule(_Strict):
    """Points while a contact attribute meets a condition (exactly one of equals/contains/in)."""

    id: RuleId = Field(pattern=_ID)
    field: str = Field(min_length=1)
    equals: str | int | float | bool | None = None
    contains: str | None = None
    in_: list[str | int | float | bool] | None = Field(default=None, alias="in")
    points: float

    @model_validator(mode="after")
    def _one_condition(self) -> AttributeRule:
        given = [c for c in ("equals", "contains", "in_") if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, contains, in")
        return self


class Lifecycle(_Strict):
    mql: float = 50
    sql: float = 100

    @model_validator(mode="after")
    def _ordered(self) -> Lifecycle:
        if self.sql < self.mql:
            raise ValueError("sql threshold must be at least the mql threshold")
        return self


class Scoring(_Strict):
    half_life: Duration | None = Field(default=None, description="decay; none means no decay")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    rules: list[ScoringRule] = Field(default_factory=list)
    attributes: list[AttributeRule] = Field(default_factory=list)

    def rules_for(self, kind: str | None) -> list[ScoringRule]:
        """The rules an event of type ``kind`` may match (the others cannot), in file order:
        one type check per rule and type, once, instead of per event."""
        return _for_type(self._by_type, kind, self.rules, lambda rule: (rule.match,))

    @cached_property
    def _by_type(self) -> dict[str | None, list[ScoringRule]]:
        return {}


class CountCondition(_Strict):
    """``at_least`` matching events ``within`` a sliding window."""

    match: EventMatch
    at_least: int = Field(ge=1)
    within: Duration


class When(_Strict):
    """What makes a trigger fire: exactly one of ``event``, ``count``, ``score_at_least``."""

    event: EventMatch | None = None
    count: CountCondition | None = None
    score_at_least: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        given = [k for k in ("event", "count", "score_at_least") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of event, count, score_at_least")
        return self


Requirement = Literal["identified", "anonymous", "consent_email"]
Channel = Literal["email", "web", "sales"]


class Suppress(_Strict):
    crm_status: list[str] = Field(default_factory=list)


class TriggerRule(_Strict):
    """A trigger: when, after what delay, unless what, to which channel, how often."""

    id: RuleId = Field(pattern=_ID)
    when: When
    delay: Duration = timedelta(0)
    cancel_if: list[EventMatch] = Field(default_factory=list)
    channel: Channel
    requires: list[Requirement] = Field(default_factory=list)
    suppress_if: Suppress = Field(default_factory=Suppress)
    once_per: Duration | None = Field(default=None, description="none means once ever")
    history_within: Duration | None = Field(
        default=None,
        description=(
            "how old a match in a cookie's anonymous history may be to count on its first "
            "link (default: the rule's delay, at least 1 day)"
        ),
    )

    @property
    def history_window(self) -> timedelta:
        if self.history_within is not None:
            return self.history_within
        return max(self.delay, timedelta(days=1))

    @field_validator("cancel_if", mode="before")
    @classmethod
    def _cancel_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("requires", mode="before")
    @classmethod
    def _requires_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _coherent(self) -> TriggerRule:
        if "identified" in self.requires and "anonymous" in self.requires:
            raise ValueError("requires cannot hold both identified and anonymous")
        if "anonymous" in self.requires and self.when.score_at_least is not None:
            raise ValueError("score_at_least triggers apply to identified contacts only")
        return self


class Triggers(_Strict):
    frequency_caps: dict[Channel, Cap] = Field(
        default_factory=dict, description="per contact and channel, e.g. email: {max: 2, per: 1d}"
    )
    rules: list[TriggerRule] = Field(default_factory=list)

    def rules_for(self, kind: str | None) -> list[TriggerRule]:
        """The rules an event of type ``kind`` may concern (its ``when.event``,
        ``when.count.match`` or a ``cancel_if`` may match it), in file order."""
        return _for_type(self._by_type, kind, self.rules, _event_matches)

    @cached_property
    def _by_type(self) -> dict[str | None, list[TriggerRule]]:
        return {}


def _event_matches(rule: TriggerRule) -> list[EventMatch]:
    when = rule.when
    matches = list(rule.cancel_if)
    if when.event is not None:
        matches.append(when.event)
    if when.count is not None:
        matches.append(when.count.match)
    return matches


def _for_type(
    cache: dict[str | None, list[_R]],
    kind: str | None,
    rules: list[_R],
    matches: Callable[[_R], Iterable[EventMatch]],
) -> list[_R]:
    found = cache.get(kind)
    if found is None:
        found = cache[kind] = [
            rule for rule in rules if any(m.accepts_type(kind) for m in matches(rule))
        ]
    return found


class AttributeCondition(_Strict):
    field: str = Field(min_length=1)
    equals: str | int | float | bool | None = None
    not_equals: str | int | float | bool | None = None
    contains: str | None = None
    in_: list[str | int | float | bool] | None = Field(default=None, alias="in")
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> AttributeCondition:
        keys = ("equals", "not_equals", "contains", "in_", "exists")
        if len([k for k in keys if getattr(self, k) is not None]) != 1:
            raise ValueError("give exactly one of equals, not_equals, contains, in, exists")
        return self


class BehaviourCondition(_Strict):
    match: EventMatch
    at_least: int = Field(default=1, ge=1)
    within: Duration


class ScoreRange(_Strict):
    min: float | None = None
    max: float | None = None


class SegmentWhere(_Strict):
    attributes: list[AttributeCondition] = Field(default_factory=list)
    behaviour: list[BehaviourCondition] = Field(default_factory=list)
    score: ScoreRange | None = None
    lifecycle_stage: list[Literal["lead", "mql", "sql"]] | None = None
    consent_email: bool | None = None
    created_within: Duration | None = None


class Segment(_Strict):
    """A list of contacts: declarative ``where``, or raw ``sql`` with named ``params``."""

    name: str = Field(pattern=_ID)
    description: str | None = None
    where: SegmentWhere | None = None
    sql: str | None = None
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_form(self) -> Segment:
        if (self.where is None) == (self.sql is None):
            raise ValueError("give exactly one of where, sql")
        return self


MergePolicy = Literal["latest"] | list[str]


class Merge(_Strict):
    """Per field, a source priority list (first wins) or ``latest``; empty never overwrites."""

    default: MergePolicy = "latest"
    fields: dict[str, MergePolicy] = Field(default_factory=dict)

    def policy(self, field: str) -> MergePolicy:
        return self.fields.get(field, self.default)


class Backoff(_Strict):
    """Retry delays: the first after ``first``, each next one twice as long, at most ``max``."""

    first: Duration = timedelta(seconds=5)
    max: Duration = timedelta(hours=1)


def is_loopback(host: str | None) -> bool:
    """``localhost``, or an address of 127.0.0.0/8 or ::1 (``""`` and ``0.0.0.0`` are not): a
    webhook URL's host, or an address the worker's API listens on (the console's guard)."""
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Destination(_Strict):
    """A webhook receiving the triggers of some rules or channels (``ma-pipeline deliver``)."""

    id: RuleId = Field(pattern=_ID)
    url: str = Field(description="https://, or http:// to a loopback address (development)")
    rules: list[RuleId] | None = Field(default=None, description="the trigger rules it gets")
    channels: list[Channel] | None = Field(default=None, description="or: the channels it gets")
    secret_env: str = Field(
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="the environment variable holding the signing secret (whsec_...)",
    )
    timeout: Duration = timedelta(seconds=10)
    retry_for: Duration = timedelta(hours=24)
    backoff: Backoff = Field(default_factory=Backoff)

    @field_validator("url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and is_loopback(parts.hostname):
            return value
        raise ValueError("must be an https:// URL (plain http:// only to a loopback address)")

    @model_validator(mode="after")
    def _one_selection(self) -> Destination:
        if (self.rules is None) == (self.channels is None):
            raise ValueError("give exactly one of rules, channels")
        return self

    def wants(self, rule: str, channel: str) -> bool:
        """Does a trigger of this rule and channel go to this destination?"""
        if self.rules is not None:
            return rule in self.rules
        return channel in (self.channels or ())


class Rules(_Strict):
    """Everything in ``MA_CONFIG``."""

    sites: list[Site] = Field(default_factory=list)
    identity: Identity = Field(default_factory=Identity)
    scoring: Scoring = Field(default_factory=Scoring)
    triggers: Triggers = Field(default_factory=Triggers)
    segments: list[Segment] = Field(default_factory=list)
    merge: Merge = Field(default_factory=Merge)
    destinations: list[Destination] = Field(default_factory=list)
    keys: list[ApiKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_sites(self) -> Rules:
        known = {site.id for site in self.sites}
        for key in self.keys:
            for scope in key.scopes:
                if scope.startswith(INGEST) and scope[len(INGEST) :] not in known:
                    raise ValueError(
                        f"keys: {key.id!r} has scope {scope!r} for an unknown site; "
                        f"known: {', '.join(sorted(known)) or 'none'}"
                    )
        return self

    @model_validator(mode="after")
    def _known_rules(self) -> Rules:
        known = {rule.id for rule in self.triggers.rules}
        for destination in self.destinations:
            for rule in destination.rules or ():
                if rule not in known:
                    raise ValueError(
                        f"destinations: {destination.id!r} names an unknown trigger rule "
                        f"{rule!r}; known: {', '.join(sorted(known))}"
                    )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> Rules:
        for label, ids in (
            ("sites", [s.id for s in self.sites]),
            ("scoring.rules", [r.id for r in self.scoring.rules]),
            ("scoring.attributes", [r.id for r in self.scoring.attributes]),
            ("triggers.rules", [r.id for r in self.triggers.rules]),
            ("segments", [s.name for s in self.segments]),
            ("destinations", [d.id for d in self.destinations]),
            ("keys", [k.id for k in self.keys]),
        ):
            seen: set[str] = set()
            for item in ids:
                if item in seen:
                    raise ValueError(f"{label}: {item!r} appears twice; ids must be unique")
                seen.add(item)
        return self

    @cached_property
    def keyring(self) -> Keyring:
        """The keys of this file and its sites' server keys, secrets read from the environment
        once (a changed variable takes effect with the next reload of the file)."""
        from pipeline.rules.keys import Keyring

        return Keyring(self)

    def site(self, site_id: str) -> Site | None:
        for site in self.sites:
            if site.id == site_id:
                return site
        return None

    def segment(self, name: str) -> Segment | None:
        for segment in self.segments:
            if segment.name == name:
                return segment
        return None
