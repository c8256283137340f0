"""JSON Schemas of every message, generated from the pydantic models into ``schemas/json/``,
and the collector's OpenAPI document into ``schemas/openapi.json``.

``make schemas`` (``python -m pipeline.schemas``) rewrites them; a test fails when the files
drift from the models, so the language-neutral contract never lies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline import models
from pipeline.models import internal

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "json"
#: the collector's OpenAPI document (``pipeline.collect.openapi``), as ``/openapi.json`` serves it
OPENAPI_FILE = SCHEMA_DIR.parent / "openapi.json"

#: file stem → (model, title). Topic values carry the topic's short name.
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {  # RootModels are BaseModels
    "events": (models.Event, "ma.events value: an accepted, normalised event"),
    "contact-updates": (models.ContactUpdate, "ma.contact-updates value: a raw contact change"),
    "contacts": (models.Contact, "ma.contacts value: the merged contact"),
    "identities": (models.IdentityDecision, "ma.identities value: a link decision"),
    "scores": (models.ScoreChange, "ma.scores value: a score change"),
    "triggers": (models.Trigger, "ma.triggers value: a fired trigger (the public output)"),
    "dead-letter": (models.DeadLetter, "ma.dead-letter value: a rejected input"),
    "deliveries": (models.Delivery, "ma.deliveries value: one webhook delivery attempt"),
    "http-batch-event": (models.InboundEvent, "one event of POST /v1/batch"),
    "http-contact": (models.ContactUpsert, "one contact of POST /v1/contacts"),
    # the worker's internal topics (pipeline/models/internal.py): not a public contract
    "x.contact-work": (internal.ContactWork, "ma.x.contact-work value: stage 1 → stage 2"),
    "x.cookie-commands": (internal.CookieCommand, "ma.x.cookie-commands value: stage 2 → 1"),
    "x.decisions": (internal.TriggerDecision, "ma.x.decisions value: a trigger skipped, why"),
    "x.anonymous-events": (
        internal.AnonymousEvent,
        "ma.x.anonymous-events value: stage 1 → the sink",
    ),
}


def render(stem: str) -> str:
    """The schema file's text for one entry of ``SCHEMAS``."""
    model, title = SCHEMAS[stem]
    schema: dict[str, Any] = model.model_json_schema(mode="serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://ma-pipeline.dev/schemas/{stem}.schema.json",
        **schema,
        "title": title,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_openapi() -> str:
    from pipeline.collect.openapi import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = SCHEMA_DIR, openapi: Path = OPENAPI_FILE) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    openapi.write_text(render_openapi(), encoding="utf-8")
    written = [openapi]
    for stem in SCHEMAS:
        path = directory / f"{stem}.schema.json"
        path.write_text(render(stem), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        sys.stdout.write(f"wrote {path}\n")
