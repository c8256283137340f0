"""The state a stage commits is its record itself, encoded as it is (``commit.State``): it must
decode to the same record, whatever the record holds."""

from __future__ import annotations

from pipeline import codec
from pipeline.worker.steps import ContactRecord, CookieRecord
from tests.unit.factories import ANA, EXAMPLE_RULES, HOUR, MINUTE, T0, aid, contact, form, page_view
from tests.unit.worker.harness import Pipeline


def test_a_committed_record_decodes_to_the_same_record() -> None:
    pipeline = Pipeline.from_file(EXAMPLE_RULES)
    cookie = aid(1)
    events = [page_view("/pricing", T0 + n * MINUTE, anonymous_id=cookie) for n in range(5)]
    events.append(form(ANA, T0 + HOUR, anonymous_id=cookie, form_id="demo-request"))
    events += [page_view("/blog/x", T0 + HOUR + n * MINUTE, anonymous_id=cookie) for n in range(3)]
    pipeline.run(events)
    record = pipeline.cookie(cookie)
    person = pipeline.contact(contact(ANA))
    # something in every part of each
    assert record.cookie.contact_id == contact(ANA) and record.profile.seen
    assert person.profile.score and person.cookies and person.contact.email == ANA
    record.offsets["ma.events:3"] = 41
    person.offsets["ma.x.contact-work:1"] = 7
    assert CookieRecord.from_dict(codec.loads(codec.dumps(record))) == record
    assert ContactRecord.from_dict(contact(ANA), codec.loads(codec.dumps(person))) == person
    # and it holds everything its ``to_dict`` (the in-memory pipeline's shape) holds
    for each in (record, person):
        assert _holds(codec.loads(codec.dumps(each)), codec.loads(codec.dumps(each.to_dict())))


def _holds(data: object, part: object) -> bool:
    """Is ``part`` in ``data``, mappings compared key by key (``data`` may have more keys)?"""
    if isinstance(part, dict):
        return isinstance(data, dict) and all(
            k in data and _holds(data[k], v) for k, v in part.items()
        )
    return data == part
