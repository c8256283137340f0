"""Fuzzing from the OpenAPI document (``GET /openapi.json``): bodies drawn from each JSON
operation's request schema (``tests.schema_strategies``), sent to the real collector and
broker. Every answer has a status the document lists for that operation and a body its schema
accepts; none is a 5xx; and every input is accounted for on the topics (accepted, or
dead-lettered).

Valid keys, the real site and realistic texts (URLs, emails, cookie ids) are mixed into the
draws, so many requests get past the envelope and the events' own checks are what is fuzzed.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipeline import codec
from tests.integration.collect.conftest import AID, CRM_KEY, SITE, WRITE_KEY, RunningCollector
from tests.integration.collect.test_fuzz import NO_RATE_LIMIT, Tally, on_loop
from tests.schema_strategies import from_schema

pytestmark = pytest.mark.integration

BUDGET = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: texts drawn for the schemas' strings: realistic ones (so that events pass), and any text
TEXTS = st.one_of(
    st.sampled_from([
        SITE, WRITE_KEY, AID, "https://www.acme.example/pricing", "https://www.acme.example/",
        "ann@initech.io", "Bo.Lee@Globex.io", "signup", "Pricing", "crm", "lead", "page",
    ]),
    st.text(max_size=40),
)  # fmt: skip
TEXTS_URL = "https://www.acme.example/pricing"
#: one example of each test is certainly accepted and one certainly refused, whatever is drawn
VALID_EVENT = {"type": "page_view", "anonymous_id": AID, "url": TEXTS_URL}
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


class Document:
    """The document as the collector serves it, with strategies and validators from it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.components = {"components": document["components"]}

    def body(self, name: str) -> st.SearchStrategy[Any]:
        return from_schema({"$ref": f"#/components/schemas/{name}"}, self.document, TEXTS)

    def check(self, path: str, status: int, answer: Any) -> None:
        """``answer`` is what the document says ``POST path`` answers with ``status``."""
        responses = self.document["paths"][path]["post"]["responses"]
        assert str(status) in responses, (path, status, answer)
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        errors = list(Draft202012Validator({**schema, **self.components}).iter_errors(answer))
        assert errors == [], (path, status, answer, [e.message for e in errors])


@pytest.fixture
async def document(collector: RunningCollector) -> Document:
    response = await collector.get("/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    return Document(codec.loads(await response.read()))


async def post(
    collector: RunningCollector, document: Document, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    response = await collector.http.post(
        f"{collector.url}{path}", data=codec.dumps(body), headers=headers
    )
    answer = codec.loads(await response.read())
    assert response.status < 500, (path, response.status, answer)
    document.check(path, response.status, answer)
    return response.status, answer


async def test_batches_drawn_from_the_document(
    collector: RunningCollector, document: Document
) -> None:
    collector.use_rules(NO_RATE_LIMIT)
    tally, run = Tally(), on_loop()
    # a drawn event, often with the cookie and URL a browser's event needs (others it may lack)
    events = st.tuples(document.body("InboundEvent"), st.booleans()).map(
        lambda p: {**p[0], "anonymous_id": AID, "url": TEXTS_URL} if p[1] else p[0]
    )
    envelopes = st.one_of(
        st.fixed_dictionaries({
            "site_id": st.sampled_from([SITE, SITE, SITE, "no-such-site"]),
            "write_key": st.sampled_from([WRITE_KEY, WRITE_KEY, WRITE_KEY, "wk_wrong"]),
            "events": st.lists(events, min_size=1, max_size=4),
        }),
        document.body("BatchRequest"),
    )  # fmt: skip

    async def send(envelope: Any) -> None:
        status, answer = await post(collector, document, "/v1/batch", envelope, {})
        if status != 200:
            tally.dead_letters += 1
            return
        tally.accepted += answer["accepted"]
        tally.dead_letters += len(answer["rejected"])
        assert answer["accepted"] + len(answer["rejected"]) == len(envelope["events"])

    @BUDGET
    @given(envelope=envelopes)
    @example(envelope={"site_id": SITE, "write_key": WRITE_KEY,
                       "events": [VALID_EVENT, {"type": "page_view"}]})  # fmt: skip
    def case(envelope: Any) -> None:
        run(send(envelope))

    await asyncio.to_thread(case)
    print(f"batches: {tally}")
    assert tally.accepted and tally.dead_letters  # both paths were taken
    assert len(await collector.read("events")) == tally.accepted
    assert len(await collector.read("dead-letter")) == tally.dead_letters


async def test_contacts_drawn_from_the_document(
    collector: RunningCollector, document: Document
) -> None:
    tally, run = Tally(), on_loop()
    bodies = st.one_of(
        document.body("ContactsRequest"),
        st.fixed_dictionaries(
            {
                "source": st.just("crm"),
                "contacts": st.lists(document.body("ContactUpsert"), min_size=1, max_size=4),
            }
        ),
    )

    async def send(body: Any) -> None:
        headers = {"Authorization": f"Bearer {CRM_KEY}"}
        status, answer = await post(collector, document, "/v1/contacts", body, headers)
        if status != 200:
            tally.dead_letters += 1
            return
        tally.accepted += answer["accepted"]
        tally.dead_letters += len(answer["rejected"])

    @BUDGET
    @given(body=bodies)
    @example(body={"source": "crm", "contacts": [{"email": "ann@initech.io"}, {"email": "x"}]})
    def case(body: Any) -> None:
        run(send(body))

    await asyncio.to_thread(case)
    print(f"contacts: {tally}")
    assert tally.accepted and tally.dead_letters
    assert len(await collector.read("contact-updates")) == tally.accepted
    assert len(await collector.read("dead-letter")) == tally.dead_letters


SEGMENT_CALLS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias"]


async def test_segment_calls_drawn_from_the_document(
    collector: RunningCollector, document: Document
) -> None:
    """Segment's single calls and batches with an SDK's Basic auth: each call ends as one
    record, an event or a dead letter (a refused request: one dead letter)."""
    collector.use_rules(NO_RATE_LIMIT)
    tally, run = Tally(), on_loop()

    async def send(path: str, body: Any) -> None:
        status, _ = await post(collector, document, path, body, {"Authorization": BASIC})
        if status != 200:
            tally.dead_letters += 1
        else:
            tally.accepted += len(body["batch"]) if "batch" in body else 1  # calls answered 200

    @BUDGET
    @given(
        request=st.one_of(
            st.tuples(st.sampled_from(SEGMENT_CALLS), document.body("SegmentCall")),
            st.tuples(st.sampled_from(["/v1/batch", "/v1/b"]), document.body("SegmentBatch")),
        )
    )
    @example(request=("/v1/track", {"type": "track", "anonymousId": AID, "event": "signup"}))
    @example(request=("/v1/batch", {"batch": []}))  # refused: an empty batch
    def case(request: tuple[str, Any]) -> None:
        run(send(*request))

    await asyncio.to_thread(case)
    print(f"segment: {tally}")
    assert tally.accepted and tally.dead_letters
    records = len(await collector.read("events")) + len(await collector.read("dead-letter"))
    assert records == tally.accepted + tally.dead_letters


async def test_a_refusal_in_both_shapes_matches_the_document(
    collector: RunningCollector, document: Document
) -> None:
    """Our envelope sent with an SDK's Basic auth is refused with ``error`` and Segment's
    ``code`` and ``message``: the document must accept that answer too."""
    body = {"site_id": "no-such-site", "events": [VALID_EVENT]}
    status, answer = await post(collector, document, "/v1/batch", body, {"Authorization": BASIC})
    assert status == 400 and {"error", "code", "message"} <= set(answer), answer
