"""Dead letters keep what came in, bounded, whatever its shape (issue: deep nesting was a 500)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import codec
from pipeline.models.dead_letter import MAX_DEAD_LETTER_PAYLOAD, bounded_payload


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def test_a_payload_json_holds_is_kept_as_it_is() -> None:
    payload = {"events": [{"type": "custom", "name": "x"}], "deep": nested(100)}
    assert bounded_payload(payload) is payload


def test_a_large_payload_keeps_its_head() -> None:
    payload = {"x": "y" * (MAX_DEAD_LETTER_PAYLOAD + 10)}
    kept = bounded_payload(payload)
    assert kept["truncated"] is True and len(kept["head"]) == MAX_DEAD_LETTER_PAYLOAD


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("depth", [300, 1000, 20_000])
def test_a_payload_nested_beyond_what_json_holds_is_bounded_text(kind: str, depth: int) -> None:
    kept = bounded_payload(nested(depth, kind=kind))
    assert kept["unencodable"] == "Recursion limit reached"
    assert "..." in kept["head"] and len(kept["head"]) < 5_000
    codec.dumps(kept)  # and the dead letter itself encodes
