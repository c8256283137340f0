"""``TriggerState``: what the trigger rules remember of a subject, and a cookie's first link."""

from __future__ import annotations

from pipeline import codec
from pipeline.trigger.state import TriggerState
from tests.unit.factories import DAY, T0


def test_absorb_merges_trigger_counters_without_duplicates() -> None:
    anonymous = TriggerState(counts={"webinar": [[T0, "e1"], [T0 + 2, "e3"]]})
    contact = TriggerState(counts={"webinar": [[T0 + 1, "e2"], [T0, "e1"]], "other": [[T0, "e9"]]})
    contact.absorb(anonymous)
    assert contact.counts == {
        "webinar": [[T0, "e1"], [T0 + 1, "e2"], [T0 + 2, "e3"]],
        "other": [[T0, "e9"]],
    }


def test_absorb_keeps_the_latest_cancel_seen() -> None:
    anonymous = TriggerState(cancel_seen={"offer": T0 + 5, "new": T0})
    contact = TriggerState(cancel_seen={"offer": T0 + 9})
    contact.absorb(anonymous)
    assert contact.cancel_seen == {"offer": T0 + 9, "new": T0}


def test_absorb_leaves_anonymous_only_trigger_state_behind() -> None:
    anonymous = TriggerState(
        pending=[{"rule": "x", "due_at": T0 + DAY}],
        web=[{"rule": "prompt", "trigger_id": "t", "until": T0 + DAY}],
        fired={"prompt": T0},
    )
    contact = TriggerState()
    contact.absorb(anonymous)
    assert (contact.pending, contact.web, contact.fired) == ([], [], {})


def test_state_round_trips_through_json_and_reads_older_profile_state() -> None:
    state = TriggerState(counts={"x": [[T0, "e1"]]}, pending=[{"rule": "x", "due_at": T0}])
    assert TriggerState.from_dict(codec.loads(codec.dumps(state.to_dict()))) == state
    # state written when the trigger fields lived in the score profile
    old_profile = {"score": 5.0, "as_of": T0, "fired": {"x": T0}, "seen": ["e1"]}
    assert TriggerState.from_dict(old_profile) == TriggerState(fired={"x": T0})
    assert state.next_due() == T0
