"""The OpenAPI document names exactly the collector's routes, is valid JSON Schema throughout,
and ``schemas/openapi.json`` is what ``/openapi.json`` serves (``make schemas`` rewrites it)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from pipeline.collect.app import Collector
from pipeline.collect.openapi import openapi_document
from pipeline.rules import RulesWatcher
from pipeline.schemas import OPENAPI_FILE, render_openapi
from pipeline.settings import Settings
from tests.conftest import REPO

IGNORED_METHODS = {"OPTIONS", "HEAD"}  # CORS preflights, and aiohttp's HEAD beside each GET


async def served_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the collector's app registers."""
    settings = Settings(config=REPO / "config" / "rules.yaml")
    app = Collector(settings, RulesWatcher(settings.config)).make_app()
    routes = set()
    for route in app.router.routes():
        if route.method in IGNORED_METHODS:
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        routes.add((route.method.lower(), canonical))
    return routes


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def test_the_document_names_every_route_the_collector_serves_and_no_other() -> None:
    served, documented = await served_routes(), documented_routes(openapi_document())
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def test_every_schema_is_valid_and_every_reference_resolves() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)  # raises, naming what is wrong
        assert schema.get("type") == "object", name
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            assert operation.get("summary"), (method, path)


def test_a_valid_batch_and_its_answer_match_their_schemas() -> None:
    document = openapi_document()

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})

    event = {"type": "page_view", "anonymous_id": "a-1", "url": "https://www.acme.example/"}
    batch = {"site_id": "acme", "write_key": "wk", "events": [event]}
    assert list(validator("BatchRequest").iter_errors(batch)) == []
    bad = {**batch, "events": [{"type": "no-such-type"}]}
    assert list(validator("BatchRequest").iter_errors(bad)) != []
    answer = {"accepted": 1, "rejected": [{"index": 1, "error": "events[1].url: required"}]}
    assert list(validator("BatchAnswer").iter_errors(answer)) == []


def test_the_committed_file_is_the_document() -> None:
    assert OPENAPI_FILE.read_text() == render_openapi(), (
        f"{OPENAPI_FILE} drifted from pipeline/collect/openapi.py: run `make schemas`"
    )
