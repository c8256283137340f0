"""The JSON Schemas in schemas/json are generated from the models and must not drift."""

import json

import pytest

from pipeline.schemas import SCHEMA_DIR, SCHEMAS, render


@pytest.mark.parametrize("stem", sorted(SCHEMAS))
def test_schema_file_matches_the_model(stem: str) -> None:
    path = SCHEMA_DIR / f"{stem}.schema.json"
    assert path.exists(), f"{path} missing: run `make schemas`"
    assert path.read_text() == render(stem), f"{path} drifted from its model: run `make schemas`"


def test_trigger_schema_holds_the_contract_fields() -> None:
    schema = json.loads((SCHEMA_DIR / "triggers.schema.json").read_text())
    contract = {
        "trigger_id",
        "rule",
        "channel",
        "contact_id",
        "anonymous_id",
        "email",
        "fired_at",
        "due_at",
        "score",
        "cause_event_ids",
        "attributes",
    }
    assert contract <= set(schema["properties"])
    assert schema["properties"]["channel"]["enum"] == ["email", "web", "sales"]


def test_identity_and_score_schemas_hold_the_contract_fields() -> None:
    identities = json.loads((SCHEMA_DIR / "identities.schema.json").read_text())
    assert {"anonymous_id", "contact_id", "previous_contact_id", "reason", "event_id", "at"} <= set(
        identities["properties"]
    )
    scores = json.loads((SCHEMA_DIR / "scores.schema.json").read_text())
    assert {"contact_id", "score", "delta", "rule", "event_id", "lifecycle_stage", "at"} <= set(
        scores["properties"]
    )
    dead = json.loads((SCHEMA_DIR / "dead-letter.schema.json").read_text())
    assert set(dead["required"]) == {"received_at", "source", "error", "payload"}
