"""Segments (CONTRACT §5) compiled to parameterised ClickHouse SQL.

A declarative segment's ``where`` becomes one ``SELECT contact_id`` over the analyst tables;
every value is a query parameter (``{p0:String}``), never formatted into the text. Raw ``sql``
segments run as written with their named ``params``. Behaviour conditions read
``contact_events`` (so a contact's anonymous history counts) and ignore automated events.
Scores are stored as of their last change; given the rules' ``half_life``, score conditions and
exports use the score decayed to now, as the worker would see it.

Example::

    compiled = compile_segment(rules.segment("sales-ready"), database="ma",
                               half_life=rules.scoring.half_life)
    compiled.sql          # 'SELECT c.contact_id FROM ma.contacts AS c LEFT JOIN ma.scores …'
    compiled.parameters   # {'p0': 2592000000.0, 'p1': 50.0, 'p2': ['mql', 'sql']}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pipeline.rules.matching import EventMatch
from pipeline.rules.models import AttributeCondition, BehaviourCondition, Segment

#: The columns of an export (``Compiled.export_sql``). An empty result through chDB names no
#: columns, so writers of an export take them from here.
EXPORT_COLUMNS = (
    "contact_id",
    "email",
    "attributes",
    "consent_email",
    "crm_status",
    "created_at",
    "score",
    "lifecycle_stage",
)


@dataclass
class Compiled:
    """SQL selecting the segment's ``contact_id``s, with its parameters."""

    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)
    #: the current score of ``s`` (``scores``), decayed when the rules give a half-life
    score_sql: str = "ifNull(s.score, 0)"

    def count_sql(self) -> str:
        return f"SELECT count() FROM ({self.sql})"

    def export_sql(self, database: str) -> str:
        return (
            "SELECT c.contact_id AS contact_id, c.email AS email, c.attributes AS attributes, "
            "c.consent_email AS consent_email, c.crm_status AS crm_status, "
            f"c.created_at AS created_at, {self.score_sql} AS score, "
            "if(ifNull(s.lifecycle_stage, '') = '', 'lead', s.lifecycle_stage) AS lifecycle_stage "
            f"FROM {database}.contacts AS c LEFT JOIN {database}.scores AS s "
            "ON s.contact_id = c.contact_id "
            f"WHERE c.contact_id IN ({self.sql}) ORDER BY c.contact_id"
        )


class _Params:
    def __init__(self, values: dict[str, Any] | None = None, prefix: str = "p") -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.prefix = prefix

    def add(self, value: Any, kind: str) -> str:
        name = f"{self.prefix}{len(self.values)}"
        while name in self.values:
            name += "_"
        self.values[name] = value
        return f"{{{name}:{kind}}}"


def _score_sql(half_life: timedelta | None, p: _Params) -> str:
    """The current score of a ``scores`` row ``s``: its value at ``as_of``, decayed to now."""
    if half_life is None or half_life.total_seconds() <= 0:
        return "ifNull(s.score, 0)"
    half_life_ms = p.add(half_life.total_seconds() * 1000, "Float64")
    return (
        "ifNull(s.score * pow(0.5, greatest(dateDiff('millisecond', s.as_of, now64(3)), 0) "
        f"/ {half_life_ms}), 0)"
    )


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
            f"match({'url' if glob.startswith('http') else 'path'}, "
            f"{p.add(glob_regex(glob), 'String')})"
            for glob in match.url
        ]
        clauses.append("(" + " OR ".join(alternatives) + ")")
    return clauses


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _attribute_sql(condition: AttributeCondition, p: _Params) -> str:
    key = p.add(condition.field, "String")
    if condition.exists is not None:
        return f"{'' if condition.exists else 'NOT '}mapContains(c.attributes, {key})"
    # a missing attribute reads as '': ``not_equals`` includes contacts without it
    column = f"c.attributes[{key}]"
    if condition.equals is not None:
        return f"{column} = {p.add(_text(condition.equals), 'String')}"
    if condition.not_equals is not None:
        return f"{column} != {p.add(_text(condition.not_equals), 'String')}"
    if condition.contains is not None:
        return f"positionCaseInsensitiveUTF8({column}, {p.add(condition.contains, 'String')}) > 0"
    assert condition.in_ is not None  # the model guarantees exactly one condition
    return f"{column} IN {p.add([_text(v) for v in condition.in_], 'Array(String)')}"


def _behaviour_sql(condition: BehaviourCondition, database: str, p: _Params) -> str:
    clauses = ["automated = 0", *_match_sql(condition.match, p)]
    seconds = p.add(int(condition.within.total_seconds()), "UInt64")
    clauses.append(f"received_at >= now64(3) - toIntervalSecond({seconds})")
    at_least = p.add(condition.at_least, "UInt64")
    return (
        f"c.contact_id IN (SELECT contact_id FROM {database}.contact_events "
        f"WHERE {' AND '.join(clauses)} GROUP BY contact_id HAVING count() >= {at_least})"
    )


def compile_segment(
    segment: Segment, database: str, *, half_life: timedelta | None = None
) -> Compiled:
    """The SQL (and parameters) selecting the ``contact_id``s of a segment.

    ``half_life`` is the scoring decay of the rules (``rules.scoring.half_life``): score
    conditions and exports then use the score as of now, not as of its last change.
    """
    if segment.sql is not None:
        raw = _Params(segment.params, prefix="ma_p")
        score = _score_sql(half_life, raw)
        return Compiled(segment.sql.strip().rstrip(";"), raw.values, score)
    where = segment.where
    assert where is not None  # the model guarantees exactly one of sql/where
    p = _Params()
    score = _score_sql(half_life, p)
    clauses: list[str] = []
    clauses += [_attribute_sql(c, p) for c in where.attributes]
    if where.consent_email is not None:
        clauses.append(f"c.consent_email = {p.add(1 if where.consent_email else 0, 'UInt8')}")
    if where.created_within is not None:
        seconds = p.add(int(where.created_within.total_seconds()), "UInt64")
        clauses.append(f"c.created_at >= now64(3) - toIntervalSecond({seconds})")
    needs_score = where.score is not None or where.lifecycle_stage is not None
    if where.score is not None and where.score.min is not None:
        clauses.append(f"{score} >= {p.add(where.score.min, 'Float64')}")
    if where.score is not None and where.score.max is not None:
        clauses.append(f"{score} <= {p.add(where.score.max, 'Float64')}")
    if where.lifecycle_stage is not None:
        stage = "if(ifNull(s.lifecycle_stage, '') = '', 'lead', s.lifecycle_stage)"
        clauses.append(f"{stage} IN {p.add(list(where.lifecycle_stage), 'Array(String)')}")
    clauses += [_behaviour_sql(b, database, p) for b in where.behaviour]
    sql = f"SELECT c.contact_id AS contact_id FROM {database}.contacts AS c"
    if needs_score:
        sql += f" LEFT JOIN {database}.scores AS s ON s.contact_id = c.contact_id"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return Compiled(sql, p.values, score)
