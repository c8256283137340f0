"""A site's ``user_id`` (Segment's ``userId``) through both stages, without a broker
(CONTRACT §2 "Segment-compatible tracking API", the ``userId`` bullet)."""

from __future__ import annotations

from pathlib import Path

from pipeline.identity import contact_id_for, user_key
from pipeline.testing import Pipeline, event

REPO = Path(__file__).resolve().parents[3]
ANA = "ana@acme.io"
ANA_ID = str(contact_id_for(ANA))
PHONE = "0b6c2f4e-9d1a-4c3b-8e7f-1a2b3c4d5e6f"
LAPTOP = "7d9e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"


def pipeline() -> Pipeline:
    return Pipeline.from_file(REPO / "config" / "rules.yaml")


def identify(at: str, **fields: object) -> dict[str, object]:
    return event("identify", at, site_id="acme", source="browser", **fields)


def page(at: str, path: str, source: str = "browser", **fields: object) -> dict[str, object]:
    url = f"https://www.acme.example{path}"
    return event("page_view", at, site_id="acme", source=source, url=url, path=path, **fields)


def test_identify_with_email_records_user_id_as_a_contact_attribute() -> None:
    p = pipeline()
    p.send(identify("2026-03-02T09:00:00Z", anonymous_id=PHONE, email=ANA, user_id="u-42",
                    traits={"user_id": "u-42"}))  # fmt: skip
    contact = p.of("contacts")[-1]
    assert contact["contact_id"] == ANA_ID
    assert contact["attributes"]["user_id"] == "u-42"
    assert p.cookie(user_key("acme", "u-42")).cookie.contact_id == ANA_ID


def test_a_later_call_with_only_a_known_user_id_is_that_contacts() -> None:
    p = pipeline()
    p.send(identify("2026-03-02T09:00:00Z", anonymous_id=PHONE, email=ANA, user_id="u-42"))
    p.send(page("2026-03-02T09:05:00Z", "/pricing", user_id="u-42", source="server"))
    scores = [s for s in p.of("scores") if s["rule"] != "attribute"]
    assert scores[-1]["contact_id"] == ANA_ID
    assert scores[-1]["score"] >= 10


def test_a_cookie_calling_with_a_known_user_id_is_linked_to_its_contact() -> None:
    p = pipeline()
    p.send(identify("2026-03-02T09:00:00Z", anonymous_id=PHONE, email=ANA, user_id="u-42"))
    p.send(page("2026-03-02T10:00:00Z", "/pricing", anonymous_id=LAPTOP))  # anonymous first
    p.send(page("2026-03-02T10:01:00Z", "/products/a", anonymous_id=LAPTOP, user_id="u-42"))
    links = [i for i in p.of("identities") if i["anonymous_id"] == LAPTOP]
    assert [(i["contact_id"], i["reason"]) for i in links] == [(ANA_ID, "user_id")]
    # the laptop's anonymous history (the pricing view) is now Ana's: 10 + 3, barely decayed
    assert p.contact(ANA_ID).profile.score > 12.9
    # and once linked through that user_id, the laptop's calls ask no more
    assert p.cookie(LAPTOP).cookie.user_id == "u-42"
    outs = p.send(page("2026-03-02T10:02:00Z", "/blog/x", anonymous_id=LAPTOP, user_id="u-42"))
    assert [o for o in outs if o.topic == "x.cookie-commands"] == []


def test_an_unknown_user_id_links_nothing_and_the_event_is_kept() -> None:
    p = pipeline()
    outs = p.send(page("2026-03-02T09:00:00Z", "/pricing", anonymous_id=LAPTOP, user_id="who"))
    assert p.of("identities") == []
    kept = [o for o in outs if o.topic == "x.anonymous-events"]
    assert kept and kept[0].value is not None
    assert kept[0].value["e"]["user_id"] == "who"
    server = p.send(page("2026-03-02T09:01:00Z", "/pricing", user_id="who", source="server"))
    assert [o.key for o in server if o.topic == "x.anonymous-events"] == [user_key("acme", "who")]


def test_a_group_call_sets_the_company_of_the_callers_contact() -> None:
    p = pipeline()
    p.send(identify("2026-03-02T09:00:00Z", anonymous_id=PHONE, email=ANA))
    p.send(event("group", "2026-03-02T09:01:00Z", site_id="acme", source="browser",
                 anonymous_id=PHONE, traits={"company": "Acme Corp"},
                 properties={"group_id": "g1"}))  # fmt: skip
    assert p.of("contacts")[-1]["attributes"]["company"] == "Acme Corp"


def test_a_group_call_of_an_anonymous_cookie_changes_no_contact() -> None:
    p = pipeline()
    p.send(event("group", "2026-03-02T09:01:00Z", site_id="acme", source="browser",
                 anonymous_id=LAPTOP, traits={"company": "Acme Corp"}))  # fmt: skip
    assert p.of("contacts") == []


def test_alias_never_merges_contacts() -> None:
    p = pipeline()
    p.send(identify("2026-03-02T09:00:00Z", anonymous_id=PHONE, email=ANA, user_id="u-42"))
    alias = {"anonymous_id": PHONE, "user_id": "u-43", "properties": {"previous_id": "u-42"}}
    p.send(event("alias", "2026-03-02T09:01:00Z", site_id="acme", source="browser", **alias))
    assert {i["contact_id"] for i in p.of("identities")} == {ANA_ID}
