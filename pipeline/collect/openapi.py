"""The collector's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built from the models the handlers validate with (``pipeline.models``) and the answers they give
(``pipeline.models.http``); ``make schemas`` also writes it to ``schemas/openapi.json``. Tests
check that it names exactly the routes the collector serves (``tests/unit/collect/
test_openapi.py``) and fuzz every JSON body operation from its request schema, checking each
answer against the document (``tests/integration/collect/test_openapi_fuzz.py``).

Example::

    document = openapi_document()
    document["paths"]["/v1/batch"]["post"]["responses"]["200"]
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pipeline import __version__, codec
from pipeline.collect.segment_api import BATCH_PATH, CALL_PATHS
from pipeline.models import http
from pipeline.models.contacts import ContactsRequest, ContactUpsert
from pipeline.models.events import MAX_BATCH_BYTES, BatchRequest, InboundEvent

REF = "#/components/schemas/{model}"
#: models named by the document: (model, mode); requests validate, answers serialise
MODELS: list[tuple[type[BaseModel], Any]] = [
    (BatchRequest, "validation"),
    (InboundEvent, "validation"),
    (ContactsRequest, "validation"),
    (ContactUpsert, "validation"),
    (http.SegmentCall, "validation"),
    (http.SegmentBatch, "validation"),
    (http.BatchAnswer, "serialization"),
    (http.ErrorAnswer, "serialization"),
    (http.SegmentSuccess, "serialization"),
    (http.SegmentRefusal, "serialization"),
    (http.Profile, "serialization"),
    (http.SegmentList, "serialization"),
    (http.SegmentCount, "serialization"),
    (http.Health, "serialization"),
]

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel] | dict[str, Any], description: str, **extra: Any) -> Any:
    schema = _ref(model) if isinstance(model, type) else model
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _body(description: str, headers: dict[str, Any] | None = None) -> Any:
    return {"description": description, **({"headers": headers} if headers else {})}


def _media(media: str, description: str, **extra: Any) -> Any:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}, **extra}


def _error(description: str, **extra: Any) -> Any:
    return _json(http.ErrorAnswer, description, **extra)


def _refusal(description: str, **extra: Any) -> Any:
    return _json(http.SegmentRefusal, description, **extra)


GIF = {"200": _media("image/gif", "a 1×1 GIF, whatever the input (always)")}
UNAVAILABLE = _error("the broker did not acknowledge: retry later", headers=RETRY_AFTER)


def _our_batch() -> dict[str, Any]:
    return {
        "summary": "Send up to 100 events (the JS tag, backends); or Segment's envelope",
        "description": (
            "Our envelope `{site_id, write_key | Authorization: Bearer, events}`, or Segment's "
            "`{batch, writeKey?, sentAt?}` (told apart by its `batch` array; answered in "
            f"Segment's shape). At most 100 events and {MAX_BATCH_BYTES // 1024} KiB; "
            "`Content-Encoding: gzip` is accepted. Each invalid event is listed and "
            "dead-lettered; the others are accepted."
        ),
        "security": [{}, *BEARER, {"basic": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"anyOf": [_ref(BatchRequest), _ref(http.SegmentBatch)]}
                },
                "text/plain": {"schema": _ref(BatchRequest)},  # sendBeacon's content type
            },
        },
        "responses": {
            "200": _json(
                {"anyOf": [_ref(http.BatchAnswer), _ref(http.SegmentSuccess)]},
                "every event accepted (durably in Kafka) or listed as rejected",
            ),
            "400": _json(
                {"anyOf": [_ref(http.ErrorAnswer), _ref(http.SegmentRefusal)]},
                "the envelope is unusable (not JSON, no events, unknown site, bad key)",
            ),
            "403": _error("the key lacks the scope `ingest:<site>`"),
            "413": _error("over 100 events or the size limit"),
            "429": _error(
                "over the site's rate limit",
                headers={"Retry-After": {"schema": {"type": "string"}}},
            ),
            "503": UNAVAILABLE,
        },
    }


def _segment_call(path: str, call: str) -> dict[str, Any]:
    batch = path == BATCH_PATH
    return {
        "summary": (
            "analytics.js's batch"
            if batch
            else f"Segment's `{call}` call"
            + ("" if path == call else f" (analytics.js's `/v1/{path}`)")
        ),
        "security": [{"basic": []}, *BEARER, {}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _ref(http.SegmentBatch if batch else http.SegmentCall)
                }
            },
        },
        "responses": {
            "200": _json(http.SegmentSuccess, "accepted (invalid calls of a batch dead-lettered)"),
            "400": _refusal("unusable: not JSON, no key, a bad key"),
            "403": _refusal("the key lacks an ingest scope"),
            "413": _refusal("over the size limit (32 KiB a call)"),
            "429": _refusal("over the site's rate limit"),
            "503": _refusal("the broker did not acknowledge: retry later", headers=RETRY_AFTER),
        },
    }


def _paths() -> dict[str, Any]:
    token = [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}]
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    read_errors = {
        "401": _error("no key, or not one of ours"),
        "403": _error("the key lacks the scope `segments:read`"),
        "404": _error("no such segment in the rules"),
        "500": _error("ClickHouse refused the segment's query (a SQL segment's own error)"),
        "503": _error("ClickHouse is unavailable: retry later", headers=RETRY_AFTER),
    }
    paths: dict[str, Any] = {
        "/t.js": {
            "get": {
                "summary": "The JS tag",
                "responses": {
                    "200": _media("application/javascript", "the tag"),
                    "304": _body("not modified (ETag)"),
                },
            }
        },
        "/v1/batch": {"post": _our_batch()},
        "/v1/p.gif": {
            "get": {
                "summary": "A page view (or other event) from a page without JavaScript",
                "parameters": [
                    {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                    for q in ("site_id", "key", "aid", "type", "url", "ref", "title")
                ],
                "responses": GIF,
            }
        },
        "/c/{token}": {
            "get": {
                "summary": "An email click: records it, then redirects to the signed URL",
                "parameters": token,
                "responses": {
                    "302": _body(
                        "to the token's URL, or the site's fallback URL for a bad token",
                        {"Location": {"schema": {"type": "string"}}},
                    ),
                    "400": _media("text/html", "a bad token and no fallback URL (dead-lettered)"),
                },
            }
        },
        "/o/{token}.gif": {
            "get": {
                "summary": "An email open (the mail's pixel)",
                "parameters": token,
                "responses": GIF,
            }
        },
        "/u/{token}": {
            method: {
                "summary": "One-click unsubscribe (RFC 8058): email consent false at once",
                "parameters": token,
                "responses": {
                    "200": _media("text/html", "unsubscribed"),
                    "400": _media("text/html", "a bad token (dead-lettered)"),
                    "503": _media(
                        "text/html", "the broker did not acknowledge: retry", headers=RETRY_AFTER
                    ),
                },
            }
            for method in ("get", "post")
        },
        "/v1/contacts": {
            "post": {
                "summary": "Upsert contacts (CRM sync); needs `contacts:write`",
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(ContactsRequest)}},
                },
                "responses": {
                    "200": _json(http.BatchAnswer, "each contact accepted or listed as rejected"),
                    "400": _error("the body is unusable"),
                    "401": _error("no key, or not one of ours"),
                    "403": _error("the key lacks the scope `contacts:write`"),
                    "413": _error("over 1,000 contacts or 4 MiB"),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/v1/profile": {
            "get": {
                "summary": "Segments and active web triggers of a cookie, for personalisation",
                "description": "No PII. Called by pages without a key; a caller that sends a key "
                "needs `profiles:read`.",
                "security": [{}, *BEARER],
                "parameters": [
                    {
                        "name": "aid",
                        "in": "query",
                        "required": False,
                        "description": "the ma_aid cookie value (else the cookie itself)",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(http.Profile, "the cookie's profile"),
                    "400": _error("no aid, or one that cannot be a cookie id"),
                    "401": _error("a key that is not ours"),
                    "403": _error("the key lacks the scope `profiles:read`"),
                    "503": _error("the worker is away: retry later", headers=RETRY_AFTER),
                },
            }
        },
        "/v1/segments": {
            "get": {
                "summary": "The segments of the rules file; needs `segments:read`",
                "security": BEARER,
                "responses": {
                    "200": _json(http.SegmentList, "name, description and kind of each"),
                    "401": read_errors["401"],
                    "403": read_errors["403"],
                },
            }
        },
        "/v1/segments/{name}/count": {
            "get": {
                "summary": "How many contacts are in a segment now",
                "security": BEARER,
                "parameters": name,
                "responses": {"200": _json(http.SegmentCount, "the count"), **read_errors},
            }
        },
        "/v1/segments/{name}/export": {
            "get": {
                "summary": "A segment's members with attributes, consent, CRM status and score",
                "security": BEARER,
                "parameters": [
                    *name,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["csv", "json"], "default": "csv"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the members, streamed",
                        "content": {
                            "text/csv": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "array"}},
                        },
                    },
                    "400": _error("an unknown format"),
                    **read_errors,
                },
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": _json(http.Health, "alive")}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the broker is reachable",
                "responses": {
                    "200": _json(http.Health, "ready"),
                    "503": _json(http.Health, "the broker is unreachable", headers=RETRY_AFTER),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": _media("text/plain", "Prometheus text format")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }
    for path, call in CALL_PATHS.items():
        paths[f"/v1/{path}"] = {"post": _segment_call(path, call)}
    paths[f"/v1/{BATCH_PATH}"] = {"post": _segment_call(BATCH_PATH, "batch")}
    return paths


@cache
def openapi_document() -> dict[str, Any]:
    """The document (built once per process; callers must not change it)."""
    _, definitions = models_json_schema(MODELS, ref_template=REF)
    schemas = definitions.get("$defs", {})
    # The envelopes take events and contacts as any JSON (each is validated alone, so one bad
    # item never refuses the others); the document names what a valid item is.
    schemas["BatchRequest"]["properties"]["events"]["items"] = _ref(InboundEvent)
    schemas["ContactsRequest"]["properties"]["contacts"]["items"] = _ref(ContactUpsert)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ma-pipeline collector",
            "version": __version__,
            "description": "Tracking beacons, email links, CRM sync, segments and profiles "
            "(CONTRACT §2). Every refusal is also a record on ma.dead-letter.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a key of the rules file's `keys:` (scoped)",
                },
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Segment's SDKs: the write key as the user name",
                },
            },
        },
    }


@cache
def openapi_json() -> bytes:
    """The document as ``GET /openapi.json`` sends it."""
    return codec.dumps(openapi_document())
