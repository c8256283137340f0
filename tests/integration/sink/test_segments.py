"""Segments against chDB, compared with answers worked out by hand from a small fixture of
contacts, scores, events and identity decisions (written straight into the analyst tables).

The people (current contact versions; F's last version is an erasure, so F is nobody):

=====  =========================================  =======  ========  ==================  =====
who    attributes                                 consent  created   score (as of)       stage
=====  =========================================  =======  ========  ==================  =====
ana    Marketing Manager, marketing, employees 50  yes     10 d ago  60 (1 h ago)        mql
bo     Engineer, engineering                       no      800 d     20 (2 d)            lead
cy     "Head of Sales, MANAGER", sales, pro, vip   yes     unknown   120 (1 h)           sql
di     –                                           yes     1 d       –                   lead
ed     sales (an older version said marketing)     no      100 d     45 (1 d; was 90)    mql
gus    support                                     no      400 d     70 (60 d: now 17.5) mql
=====  =========================================  =======  ========  ==================  =====

Pricing page views (``/pricing*``) in the last 30 days, as ``contact_events`` sees them:
ana 2 (as herself); bo 2 (one as himself, one anonymous before his cookie's first link);
cy 1 (two more 35-40 days ago, one ``/blog/pricing``); di 0 (two, by a mail scanner); gus 2
(anonymous, before the cookie's first link went to him); ed 1 (after the cookie was re-linked
from gus to ed: the earlier anonymous views stay with gus).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline import codec, contact_id_for
from pipeline.cli import main
from pipeline.rules import load_rules
from pipeline.rules.models import Segment
from pipeline.segments import compile_segment
from tests.conftest import REPO, free_port
from tests.integration.sink.conftest import Warehouse

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
HALF_LIFE = timedelta(days=30)
PEOPLE = ("ana", "bo", "cy", "di", "ed", "fay", "gus")
ID = {name: str(contact_id_for(f"{name}@acme.io")) for name in PEOPLE}
NAME = {v: k for k, v in ID.items()}
AID_BO, AID_GUS = str(uuid.uuid4()), str(uuid.uuid4())


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def contact(name: str, attributes: dict[str, str], consent: bool, created: datetime | None,
            *, crm_status: str = "", updated: datetime | None = None,
            deleted: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"contact_id": ID[name], "email": f"{name}@acme.io", "attributes": attributes,
            "consent_email": int(consent), "crm_status": crm_status, "crm_id": "",
            "created_at": created, "updated_at": updated or ago(days=1),
            "deleted": int(deleted)}  # fmt: skip


def score(name: str, value: float, stage: str, at: datetime) -> dict[str, Any]:
    return {"contact_id": ID[name], "score": value, "lifecycle_stage": stage, "at": at}


def event(when: datetime, *, who: str = "", aid: str = "", path: str = "/pricing",
          kind: str = "page_view", pre: bool = False, automated: bool = False,
          name: str = "", campaign: str = "", form: str = "") -> dict[str, Any]:  # fmt: skip
    return {"event_id": str(uuid.uuid4()), "type": kind, "site_id": "acme", "received_at": when,
            "source": "browser", "anonymous_id": aid, "contact_id": ID[who] if who else "",
            "pre_identification": int(pre), "url": f"https://www.acme.example{path}",
            "path": path, "name": name, "form_id": form, "campaign_id": campaign,
            "automated": int(automated)}  # fmt: skip


def identity(aid: str, who: str, previous: str, at: datetime) -> dict[str, Any]:
    return {"anonymous_id": aid, "contact_id": ID[who], "previous_contact_id": ID.get(previous, ""),
            "reason": "identify", "event_id": str(uuid.uuid4()), "at": at}  # fmt: skip


@pytest.fixture(scope="module")
def people(warehouse: Warehouse) -> Warehouse:
    warehouse.insert(
        "contact_versions",
        contact("ana", {"title": "Marketing Manager", "department": "marketing",
                        "employees": "50"}, True, ago(days=10), crm_status="lead"),
        contact("bo", {"title": "Engineer", "department": "engineering"}, False, ago(days=800),
                crm_status="customer"),
        contact("cy", {"title": "Head of Sales, MANAGER", "department": "sales", "plan": "pro",
                       "vip": "true"}, True, None, crm_status="in_deal"),
        contact("di", {}, True, ago(days=1)),
        contact("ed", {"department": "marketing", "title": "Manager"}, True, ago(days=100),
                updated=ago(days=5)),
        contact("ed", {"department": "sales"}, False, ago(days=100), updated=ago(days=1)),
        contact("fay", {"department": "marketing", "title": "manager"}, True, ago(days=2),
                updated=ago(days=2)),
        contact("fay", {}, False, None, updated=ago(hours=1), deleted=True),
        contact("gus", {"department": "support"}, False, ago(days=400)),
    )  # fmt: skip
    warehouse.insert(
        "score_state",
        score("ana", 60, "mql", ago(hours=1)),
        score("bo", 20, "lead", ago(days=2)),
        score("cy", 120, "sql", ago(hours=1)),
        score("ed", 90, "mql", ago(days=10)),
        score("ed", 45, "mql", ago(days=1)),
        score("fay", 200, "sql", ago(hours=2)),
        score("gus", 70, "mql", ago(days=60)),
    )
    warehouse.insert(
        "events",
        event(ago(days=2), who="ana"),
        event(ago(days=1), who="ana", path="/pricing/enterprise"),
        event(ago(days=1), who="ana", kind="form_submit", path="/demo", form="demo-request"),
        event(ago(days=3), who="bo", aid=AID_BO),
        event(ago(days=4), aid=AID_BO, pre=True),
        event(ago(days=1), who="bo", kind="email_click", campaign="spring"),
        event(ago(days=40), who="cy"),
        event(ago(days=35), who="cy"),
        event(ago(days=1), who="cy"),
        event(ago(days=1), who="cy", path="/blog/pricing"),
        event(ago(days=1), who="di", automated=True),
        event(ago(days=1), who="di", automated=True),
        event(ago(days=1), who="di", kind="custom", path="/app", name="trial_signup"),
        event(ago(days=5), aid=AID_GUS, pre=True),
        event(ago(days=5), aid=AID_GUS, pre=True, path="/pricing/teams"),
        event(ago(days=2), who="ed", aid=AID_GUS),
        event(ago(days=1), aid=AID_GUS),  # anonymous again, not before a first link: nobody's
        event(ago(days=1), who="fay"),
        event(ago(days=1), who="fay"),
    )  # fmt: skip
    warehouse.insert(
        "identities",
        identity(AID_BO, "bo", "", ago(days=3)),
        identity(AID_GUS, "gus", "", ago(days=4)),
        identity(AID_GUS, "ed", "gus", ago(days=3)),
    )
    return warehouse


def members(warehouse: Warehouse, where: dict[str, Any] | None = None, *,
            half_life: timedelta | None = HALF_LIFE, **raw: Any) -> set[str]:  # fmt: skip
    """The names of a segment's members, and its count checked against them."""
    segment = Segment.model_validate({"name": "s", **({"where": where} if where else raw)})
    compiled = compile_segment(segment, warehouse.database, half_life=half_life)
    ids = warehouse.rows(compiled.sql, **compiled.parameters)
    [(count,)] = warehouse.rows(compiled.count_sql(), **compiled.parameters)
    assert count == len(ids)
    return {NAME[i] for (i,) in ids}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "department", "equals": "marketing"}, {"ana"}),
        ({"field": "department", "not_equals": "marketing"}, {"bo", "cy", "di", "ed", "gus"}),
        ({"field": "title", "contains": "MANAGER"}, {"ana", "cy"}),
        ({"field": "title", "contains": "manager"}, {"ana", "cy"}),
        ({"field": "department", "in": ["sales", "engineering"]}, {"bo", "cy", "ed"}),
        ({"field": "plan", "exists": True}, {"cy"}),
        ({"field": "plan", "exists": False}, {"ana", "bo", "di", "ed", "gus"}),
        ({"field": "vip", "equals": True}, {"cy"}),
        ({"field": "employees", "equals": 50}, {"ana"}),
        ({"field": "employees", "in": [10, 50]}, {"ana"}),
        ({"field": "department", "equals": "x' OR 1=1 --"}, set()),
    ],
    ids=["equals", "not_equals", "contains_upper", "contains_lower", "in", "exists",
         "not_exists", "equals_bool", "equals_number", "in_numbers", "injection"],
)  # fmt: skip
def test_attribute_conditions_select_current_versions_only(
    people: Warehouse, condition: dict[str, Any], expected: set[str]
) -> None:
    assert members(people, {"attributes": [condition]}) == expected


@pytest.mark.parametrize(
    ("match", "at_least", "within", "expected"),
    [
        ({"type": "page_view", "url": "/pricing*"}, 2, "30d", {"ana", "bo", "gus"}),
        ({"type": "page_view", "url": "/pricing*"}, 1, "30d", {"ana", "bo", "cy", "ed", "gus"}),
        ({"type": "page_view", "url": "/pricing*"}, 3, "60d", {"cy"}),
        ({"type": "page_view", "url": "/pricing*"}, 2, "36h", set()),
        ({"type": "page_view", "url": "https://www.acme.example/blog/*"}, 1, "30d", {"cy"}),
        ({"type": "custom", "name": "trial_signup"}, 1, "7d", {"di"}),
        ({"type": "email_click", "campaign": "spring"}, 1, "30d", {"bo"}),
        ({"type": "form_submit", "form_id": ["demo-request", "webinar"]}, 1, "30d", {"ana"}),
    ],
    ids=["pricing_twice", "pricing_once", "pricing_60d", "pricing_36h", "full_url_glob",
         "custom_name", "campaign", "form_id"],
)  # fmt: skip
def test_behaviour_counts_contact_events_including_anonymous_history(
    people: Warehouse, match: dict[str, Any], at_least: int, within: str, expected: set[str]
) -> None:
    where = {"behaviour": [{"match": match, "at_least": at_least, "within": within}]}
    assert members(people, where) == expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"score": {"min": 50}}, {"ana", "cy"}),
        ({"score": {"max": 50}}, {"bo", "di", "ed", "gus"}),
        ({"score": {"min": 10, "max": 50}}, {"bo", "ed", "gus"}),
        ({"lifecycle_stage": ["mql", "sql"]}, {"ana", "cy", "ed", "gus"}),
        ({"lifecycle_stage": ["lead"]}, {"bo", "di"}),
        ({"consent_email": True}, {"ana", "cy", "di"}),
        ({"consent_email": False}, {"bo", "ed", "gus"}),
        ({"created_within": "365d"}, {"ana", "di", "ed"}),
        ({"created_within": "2d"}, {"di"}),
    ],
    ids=["score_min", "score_max", "score_range", "stage_mql_sql", "stage_lead", "consent",
         "no_consent", "created_within_year", "created_within_2d"],
)  # fmt: skip
def test_score_stage_consent_and_age(
    people: Warehouse, where: dict[str, Any], expected: set[str]
) -> None:
    assert members(people, where) == expected


def test_score_without_a_half_life_is_the_value_as_of_the_last_change(people: Warehouse) -> None:
    assert members(people, {"score": {"min": 50}}, half_life=None) == {"ana", "cy", "gus"}


def test_conditions_combine_with_and(people: Warehouse) -> None:
    rules = load_rules(REPO / "config" / "rules.yaml")
    engaged = rules.segment("marketing-managers-engaged")
    assert engaged is not None and engaged.where is not None
    assert members(people, engaged.where.model_dump(by_alias=True, exclude_none=True)) == {"ana"}
    where = {"consent_email": False, "behaviour": [
        {"match": {"type": "page_view"}, "at_least": 1, "within": "30d"}]}  # fmt: skip
    assert members(people, where) == {"bo", "ed", "gus"}


def test_raw_sql_segment_with_named_parameters(people: Warehouse) -> None:
    found = members(people, sql="SELECT contact_id FROM contacts WHERE crm_status = {s:String}",
                    params={"s": "in_deal"})  # fmt: skip
    assert found == {"cy"}
    stale = members(people, sql="SELECT contact_id FROM contacts "
                    "WHERE created_at < now() - INTERVAL {years:UInt32} YEAR",
                    params={"years": 2})  # fmt: skip
    assert stale == {"bo"}


def cli(people: Warehouse, tmp_path: Path, *args: str) -> str:
    """``ma-pipeline …`` in this process, on this process's chDB path, with no worker running
    (so the command opens the engine itself, as it does when the pipeline is stopped)."""
    env = {
        "MA_CLICKHOUSE_URL": people.url,
        "MA_CLICKHOUSE_DATABASE": people.database,
        "MA_CONFIG": str(REPO / "config" / "rules.yaml"),
        "MA_WORKER_URL": f"http://127.0.0.1:{free_port()}",
        "MA_DATA_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_counts_and_exports_segments_of_the_rules_file(
    people: Warehouse, tmp_path: Path
) -> None:
    assert cli(people, tmp_path, "segments", "count", "marketing-managers-engaged").strip() == "1"
    assert cli(people, tmp_path, "segments", "count", "stale-leads").strip() == "1"
    lines = cli(people, tmp_path, "segments", "export", "sales-ready", "--format", "json")
    rows = [codec.loads(line) for line in lines.splitlines()]
    assert sorted(NAME[r["contact_id"]] for r in rows) == ["ana", "cy"]
    ana = next(r for r in rows if NAME[r["contact_id"]] == "ana")
    assert ana["email"] == "ana@acme.io"
    assert ana["attributes"]["title"] == "Marketing Manager"
    assert ana["lifecycle_stage"] == "mql"
    assert 59.9 < ana["score"] < 60  # decayed for the hour since its last change
    out = tmp_path / "list.csv"
    cli(people, tmp_path, "segments", "export", "marketing-managers-engaged", "--out", str(out))
    header, *body = out.read_text().splitlines()
    assert header.split(",")[:2] == ["contact_id", "email"]
    assert [line.split(",")[1] for line in body] == ["ana@acme.io"]
