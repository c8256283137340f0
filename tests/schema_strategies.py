"""Hypothesis strategies drawing values that a JSON Schema accepts, for the keywords the
OpenAPI document's request schemas use (pydantic's output: ``$ref``, ``anyOf``, ``enum``,
``type``, ``properties``/``required``, ``additionalProperties``/``propertyNames``, ``items``,
``minLength``/``maxLength``, ``maxItems``, ``format`` uuid and date-time).

hypothesis-jsonschema would do this, but 0.23.1 (its latest) fails on hypothesis 6.170 (``'many'
object has no attribute 'more'``). An unknown keyword raises, so a schema this does not
understand is never fuzzed as if it were something else.

Example::

    strategy = from_schema({"$ref": "#/components/schemas/InboundEvent"}, document)
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import strategies as st

#: keywords that only describe
IGNORED = {"title", "description", "default", "examples"}
KNOWN = IGNORED | {
    "$ref", "anyOf", "oneOf", "enum", "const", "type", "properties", "required",
    "additionalProperties", "propertyNames", "items", "minLength", "maxLength", "minItems",
    "maxItems", "format",
}  # fmt: skip
#: longest text drawn (maxLength may be 4,096: long texts only slow the fuzz down)
LONGEST = 40

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def from_schema(
    schema: dict[str, Any], root: dict[str, Any], texts: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Any]:
    """Values ``schema`` accepts; ``$ref`` resolved against ``root`` (the OpenAPI document).
    ``texts``: drawn for strings without a format (cut to their length limits); any text if
    not given."""
    return _Draw(root, texts).schema(schema)


class _Draw:
    def __init__(self, root: dict[str, Any], texts: st.SearchStrategy[str] | None) -> None:
        self.root = root
        self.texts = texts

    def schema(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        return _schema(self, schema)

    def text(self, schema: dict[str, Any]) -> st.SearchStrategy[str]:
        fmt = schema.get("format")
        if fmt == "uuid":
            return st.uuids().map(str)
        if fmt == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat())
        if fmt is not None:
            raise ValueError(f"format {fmt!r} not handled")
        low = schema.get("minLength", 0)
        high = max(low, min(schema.get("maxLength", LONGEST), LONGEST))
        if self.texts is None:
            return st.text(min_size=low, max_size=high)
        return self.texts.map(lambda t: t[: schema.get("maxLength", len(t))]).filter(
            lambda t: len(t) >= low
        )


def _schema(draw: _Draw, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"schema keywords not handled: {sorted(unknown)}")
    if "$ref" in schema:
        target: Any = draw.root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return st.deferred(lambda: draw.schema(target))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return st.one_of([draw.schema(s) for s in schema[keyword]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([draw.schema({**schema, "type": k}) for k in kind])
    if kind is None:
        return json_values
    return _typed(draw, kind, schema)


def _typed(draw: _Draw, kind: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(-(2**40), 2**40)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        return draw.text(schema)
    if kind == "array":
        items = draw.schema(schema.get("items", {}))
        return st.lists(
            items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 4), 4)
        )
    if kind == "object":
        return _object(draw, schema)
    raise ValueError(f"type {kind!r} not handled")


def _object(draw: _Draw, schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", not properties)
    if not properties:  # a map: {name: value}
        keys = draw.text(schema.get("propertyNames", {"type": "string"}))
        values = draw.schema(extra) if isinstance(extra, dict) else json_values
        return st.dictionaries(keys, values, max_size=3)
    return st.fixed_dictionaries(
        {name: draw.schema(s) for name, s in properties.items() if name in required},
        optional={name: draw.schema(s) for name, s in properties.items()
                  if name not in required},
    )  # fmt: skip
