"""Segments compile to parameterised ClickHouse SQL: every value from the rules file travels as a
query parameter, never as text in the SQL (the answers themselves are checked against chDB in
``tests/integration/sink/test_segments.py``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from pipeline.rules import load_rules
from pipeline.rules.models import Segment
from pipeline.segments import compile_segment, glob_regex
from tests.unit.factories import EXAMPLE_RULES

#: Values that would break or subvert the SQL if they were ever formatted into it.
HOSTILE = "x' OR 1=1 --"
HOSTILE_FIELD = "ti`tle'] OR 1=1 --"
PLACEHOLDER = re.compile(r"\{(\w+):([^}]+)\}")


def segment(where: dict[str, Any] | None = None, **kw: Any) -> Segment:
    return Segment.model_validate({"name": "s", **({"where": where} if where else {}), **kw})


def placeholders(sql: str) -> dict[str, str]:
    return dict(PLACEHOLDER.findall(sql))


@pytest.mark.parametrize(
    "condition",
    [
        {"field": HOSTILE_FIELD, "equals": HOSTILE},
        {"field": HOSTILE_FIELD, "not_equals": HOSTILE},
        {"field": HOSTILE_FIELD, "contains": HOSTILE},
        {"field": HOSTILE_FIELD, "in": [HOSTILE, "b"]},
        {"field": HOSTILE_FIELD, "exists": True},
        {"field": HOSTILE_FIELD, "exists": False},
    ],
    ids=["equals", "not_equals", "contains", "in", "exists", "not_exists"],
)
def test_attribute_values_and_field_names_travel_only_as_parameters(
    condition: dict[str, Any],
) -> None:
    compiled = compile_segment(segment({"attributes": [condition]}), "ma")
    assert HOSTILE not in compiled.sql and "1=1" not in compiled.sql
    assert "OR" not in compiled.sql
    values = [v for v in compiled.parameters.values()]
    assert HOSTILE_FIELD in values
    if "exists" not in condition:
        flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
        assert HOSTILE in flat
    # every placeholder has a value, every value a placeholder
    assert set(placeholders(compiled.sql)) == set(compiled.parameters)


def test_behaviour_match_values_travel_only_as_parameters() -> None:
    where = {
        "behaviour": [
            {
                "match": {
                    "type": "custom",
                    "name": HOSTILE,
                    "campaign": HOSTILE + "c",
                    "form_id": HOSTILE + "f",
                    "url": f"/pricing/{HOSTILE}*",
                },
                "at_least": 3,
                "within": "7d",
            }
        ]
    }
    compiled = compile_segment(segment(where), "ma")
    assert "'" not in compiled.sql.replace("'millisecond'", "")
    assert HOSTILE not in compiled.sql
    types = placeholders(compiled.sql)
    assert set(types) == set(compiled.parameters)
    by_value = {str(v): types[k] for k, v in compiled.parameters.items()}
    assert by_value[str(["custom"])] == "Array(String)"
    assert by_value[str([HOSTILE])] == "Array(String)"
    assert by_value["3"] == "UInt64"  # at_least
    assert by_value[str(7 * 86400)] == "UInt64"  # within, in seconds


def test_behaviour_reads_contact_events_of_people_only() -> None:
    where = {"behaviour": [{"match": {"type": "page_view"}, "at_least": 2, "within": "30d"}]}
    sql = compile_segment(segment(where), "ana_db").sql
    assert "FROM ana_db.contact_events" in sql  # the anonymous history counts
    assert "automated = 0" in sql  # mail scanners are not behaviour
    assert "HAVING count() >=" in sql


def test_score_lifecycle_consent_and_age_are_parameters() -> None:
    where = {
        "score": {"min": 50, "max": 99.5},
        "lifecycle_stage": ["mql", "sql"],
        "consent_email": True,
        "created_within": "365d",
    }
    compiled = compile_segment(segment(where), "ma")
    values = sorted(map(str, compiled.parameters.values()))
    assert values == sorted(["50.0", "99.5", str(["mql", "sql"]), "1", str(365 * 86400)])
    assert "LEFT JOIN ma.scores AS s" in compiled.sql
    assert "mql" not in compiled.sql


def test_scores_decay_with_the_rules_half_life() -> None:
    where = {"score": {"min": 50}}
    plain = compile_segment(segment(where), "ma")
    decaying = compile_segment(segment(where), "ma", half_life=timedelta(days=30))
    assert "pow(0.5" not in plain.sql
    assert "pow(0.5" in decaying.sql and "pow(0.5" in decaying.export_sql("ma")
    assert 30 * 86_400_000.0 in decaying.parameters.values()
    assert set(placeholders(decaying.export_sql("ma"))) <= set(decaying.parameters)


def test_a_segment_without_score_conditions_does_not_join_scores() -> None:
    compiled = compile_segment(segment({"consent_email": False}), "ma")
    assert "scores" not in compiled.sql
    assert compiled.parameters == {"p0": 0}


def test_an_empty_where_selects_every_contact() -> None:
    compiled = compile_segment(segment({"attributes": []}), "ma")
    assert compiled.sql == "SELECT c.contact_id AS contact_id FROM ma.contacts AS c"


def test_raw_sql_runs_as_written_with_its_named_parameters() -> None:
    raw = segment(sql="  SELECT contact_id FROM contacts WHERE crm_status = {s:String};\n",
                  params={"s": HOSTILE})  # fmt: skip
    compiled = compile_segment(raw, "ma")
    assert compiled.sql == "SELECT contact_id FROM contacts WHERE crm_status = {s:String}"
    assert compiled.parameters == {"s": HOSTILE}
    assert compiled.count_sql() == f"SELECT count() FROM ({compiled.sql})"


def test_raw_sql_keeps_its_parameter_names_when_scores_decay() -> None:
    raw = segment(
        sql="SELECT contact_id FROM contacts WHERE {ma_p1:UInt8} = 1", params={"ma_p1": 1}
    )
    compiled = compile_segment(raw, "ma", half_life=timedelta(days=1))
    assert compiled.parameters["ma_p1"] == 1
    assert len(compiled.parameters) == 2
    assert set(placeholders(compiled.export_sql("ma"))) == set(compiled.parameters)


def test_export_lists_the_segment_members_with_score_and_stage() -> None:
    compiled = compile_segment(segment({"consent_email": True}), "db1")
    export = compiled.export_sql("db1")
    assert export.startswith("SELECT c.contact_id AS contact_id, c.email AS email")
    assert f"WHERE c.contact_id IN ({compiled.sql}) ORDER BY c.contact_id" in export


def test_every_example_segment_compiles() -> None:
    rules = load_rules(EXAMPLE_RULES)
    assert rules.segments
    for example in rules.segments:
        compiled = compile_segment(example, "ma", half_life=rules.scoring.half_life)
        assert set(placeholders(compiled.sql)) <= set(compiled.parameters)


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("/pricing*", ["/pricing", "/pricing/enterprise"], ["/blog/pricing", "/Pricing"]),
        ("/blog/*/data?", ["/blog/a/b/data1"], ["/blog/a/data", "/blog/a/data12"]),
        ("/a.b+c(d)", ["/a.b+c(d)"], ["/aXb+c(d)", "/a.bbc(d)"]),
        ("/x**", ["/x/y/z"], ["/y"]),
    ],
)
def test_url_globs_become_anchored_regexes(
    glob: str, matching: list[str], not_matching: list[str]
) -> None:
    pattern = re.compile(glob_regex(glob))
    assert all(pattern.match(path) for path in matching)
    assert not any(pattern.match(path) for path in not_matching)
