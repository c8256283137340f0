"""``pipeline.testing``, as the README shows users testing their own rules file."""

from __future__ import annotations

from pipeline.testing import Pipeline, event
from tests.conftest import REPO

AID = "3b2c7f9e-1c1a-4a8e-9d55-3f0e2b1d9c01"


def test_the_documented_example_fires_the_offer_a_day_after_the_anonymous_view() -> None:
    pipeline = Pipeline.from_file(REPO / "config" / "rules.yaml")
    view = event(
        "page_view",
        "2026-03-02T09:00:00Z",
        anonymous_id=AID,
        url="https://www.acme.example/pricing",
        path="/pricing",
    )
    signup = event(
        "form_submit",
        "2026-03-02T09:05:00Z",
        anonymous_id=AID,
        email="ana@acme.io",
        form_id="newsletter",
        traits={"consent_email": "on"},
    )
    pipeline.run([signup, view])  # any order: applied in event-time order
    assert pipeline.of("triggers") == []
    assert [i["reason"] for i in pipeline.of("identities")] == ["form_submit"]
    pipeline.tick("2026-03-03T09:05:00Z")
    [offer] = pipeline.of("triggers")
    assert offer["rule"] == "pricing-trial-offer"
    assert offer["cause_event_ids"] == [view["event_id"]]
    assert offer["email"] == "ana@acme.io"
