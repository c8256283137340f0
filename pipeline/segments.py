"""Segments (CONTRACT §5) compiled to parameterised ClickHouse SQL.

A declarative segment's ``where`` becomes one ``SELECT contact_id`` over the analyst tables;
every value is a query parameter (``{p0:String}``), never formatted into the text. Raw ``sql``
segments run as written with their named ``params``. Behaviour conditions read
``contact_events`` (so a contact's anonymous history counts) and ignore automated events.

Example::

    compiled = compile_segment(rules.segment("sales-ready"), database="ma")
    compiled.sql          # 'SELECT c.contact_id FROM ma.contacts AS c LEFT JOIN ma.scores …'
    compiled.parameters   # {'p0': 50.0, 'p1': ['mql', 'sql']}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.rules.matching import EventMatch
from pipeline.rules.models import AttributeCondition, BehaviourCondition, Segment


@dataclass
class Compiled:
    """SQL selecting the segment's ``contact_id``s, with its parameters."""

    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def count_sql(self) -> str:
        return f"SELECT count() FROM ({self.sql})"

    def export_sql(self, database: str) -> str:
        return (
            "SELECT c.contact_id AS contact_id, c.email AS email, c.attributes AS attributes, "
            "c.consent_email AS consent_email, c.crm_status AS crm_status, "
            "c.created_at AS created_at, ifNull(s.score, 0) AS score, "
            "if(ifNull(s.lifecycle_stage, '') = '', 'lead', s.lifecycle_stage) AS lifecycle_stage "
            f"FROM {database}.contacts AS c LEFT JOIN {database}.scores AS s "
            "ON s.contact_id = c.contact_id "
            f"WHERE c.contact_id IN ({self.sql}) ORDER BY c.contact_id"
        )


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any, kind: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{kind}}}"


def glob_regex(glob: str) -> str:
    """An anchored RE2 pattern for a URL glob (``*`` any run of characters, ``?`` one)."""
    parts = []
    for char in glob.replace("**", "*"):
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
    return "^" + "".join(parts) + "$"


def _match_sql(match: EventMatch, p: _Params) -> list[str]:
    clauses = []
    if match.type is not None:
        clauses.append(f"type IN {p.add(match.type, 'Array(String)')}")
    if match.name is not None:
        clauses.append(f"name IN {p.add(match.name, 'Array(String)')}")
    if match.campaign is not None:
        clauses.append(f"campaign_id IN {p.add(match.campaign, 'Array(String)')}")
    if match.form_id is not None:
        clauses.append(f"form_id IN {p.add(match.form_id, 'Array(String)')}")
    if match.url is not None:
        alternatives = [
            f"match({'url' if glob.startswith('http') else 'path'}, {p.add(glob_regex(glob), 'String')})"
            for glob in match.url
        ]
        clauses.append("(" + " OR ".join(alternatives) + ")")
    return clauses


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _attribute_sql(condition: AttributeCondition, p: _Params) -> str:
    column = f"c.attributes[{p.add(condition.field, 'String')}]"
    if condition.equals is not None:
        return f"{column} = {p.add(_text(condition.equals), 'String')}"
    if condition.not_equals is not None:
        return f"{column} != {p.add(_text(condition.not_equals), 'String')}"
    if condition.contains is not None:
        return f"positionCaseInsensitiveUTF8({column}, {p.add(condition.contains, 'String')}) > 0"
    if condition.in_ is not None:
        return f"{column} IN {p.add([_text(v) for v in condition.in_], 'Array(String)')}"
    key = p.add(condition.field, "String")
    return f"{'' if condition.exists else 'NOT '}mapContains(c.attributes, {key})"


def _behaviour_sql(condition: BehaviourCondition, database: str, p: _Params) -> str:
    clauses = ["automated = 0", *_match_sql(condition.match, p)]
    seconds = p.add(int(condition.within.total_seconds()), "UInt64")
    clauses.append(f"received_at >= now64(3) - toIntervalSecond({seconds})")
    at_least = p.add(condition.at_least, "UInt64")
    return (
        f"c.contact_id IN (SELECT contact_id FROM {database}.contact_events "
        f"WHERE {' AND '.join(clauses)} GROUP BY contact_id HAVING count() >= {at_least})"
    )


def compile_segment(segment: Segment, database: str) -> Compiled:
    """The SQL (and parameters) selecting the ``contact_id``s of a segment."""
    if segment.sql is not None:
        return Compiled(segment.sql.strip().rstrip(";"), dict(segment.params))
    where = segment.where
    assert where is not None  # the model guarantees exactly one of sql/where
    p = _Params()
    clauses: list[str] = []
    clauses += [_attribute_sql(c, p) for c in where.attributes]
    if where.consent_email is not None:
        clauses.append(f"c.consent_email = {p.add(1 if where.consent_email else 0, 'UInt8')}")
    if where.created_within is not None:
        seconds = p.add(int(where.created_within.total_seconds()), "UInt64")
        clauses.append(f"c.created_at >= now64(3) - toIntervalSecond({seconds})")
    needs_score = where.score is not None or where.lifecycle_stage is not None
    if where.score is not None and where.score.min is not None:
        clauses.append(f"ifNull(s.score, 0) >= {p.add(where.score.min, 'Float64')}")
    if where.score is not None and where.score.max is not None:
        clauses.append(f"ifNull(s.score, 0) <= {p.add(where.score.max, 'Float64')}")
    if where.lifecycle_stage is not None:
        stage = "if(ifNull(s.lifecycle_stage, '') = '', 'lead', s.lifecycle_stage)"
        clauses.append(f"{stage} IN {p.add(list(where.lifecycle_stage), 'Array(String)')}")
    clauses += [_behaviour_sql(b, database, p) for b in where.behaviour]
    sql = f"SELECT c.contact_id AS contact_id FROM {database}.contacts AS c"
    if needs_score:
        sql += f" LEFT JOIN {database}.scores AS s ON s.contact_id = c.contact_id"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return Compiled(sql, p.values)
