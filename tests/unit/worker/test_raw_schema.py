"""``RawSchema`` (``pipeline.worker.faust_fixes``) makes the events Faust's own ``Schema`` with
``raw`` serializers makes, without its serializer registry."""

from __future__ import annotations

import faust
from faust.types.tuples import Message

from pipeline.worker.faust_fixes import RawSchema


async def test_its_events_are_the_raw_schemas() -> None:
    app = faust.App("raw-schema-test", broker="kafka://127.0.0.1:1")
    ours = RawSchema().compile(app)
    faust_raw = faust.Schema(key_serializer="raw", value_serializer="raw").compile(app)
    for key, value in ((b"aid-1", b'{"type":"page_view"}'), (None, b"{}"), (b"k", None)):
        message = Message("ma.events", 3, 41, 0.0, 0, [("h", b"1")], key, value, None)
        mine, theirs = await ours(message), await faust_raw(message)
        assert type(mine) is type(theirs)
        assert (mine.key, mine.value, mine.headers, mine.message) == (
            theirs.key, theirs.value, theirs.headers, theirs.message)  # fmt: skip
