"""gateway/stream_slots.py: open SSE streams bounded per (key, user) and per process; a slot comes back
when its stream ends, however it ends, and no entry is kept for a caller with none open."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.stream_slots import StreamSlots


def test_per_user_then_total_bounds_and_slots_come_back() -> None:
    slots = StreamSlots(total_max=3, per_user_max=2)
    alice, bob, carol = ("k", 1), ("k", 2), ("k", 3)
    with slots.hold(alice), slots.hold(alice):
        with pytest.raises(ApiError) as per_user:
            with slots.hold(alice):
                pass
        assert (per_user.value.status, per_user.value.code) == (429, "RATE_LIMITED")
        with slots.hold(bob):
            with pytest.raises(ApiError) as total:
                with slots.hold(carol):
                    pass
            assert (total.value.status, total.value.code) == (503, "OVERLOADED")
            assert slots.total == 3
        with slots.hold(carol):
            assert slots.total == 3
    assert slots.total == 0 and slots._open == {}


def test_a_stream_that_fails_gives_its_slot_back() -> None:
    slots = StreamSlots(total_max=1, per_user_max=1)
    with pytest.raises(RuntimeError), slots.hold(("k", None)):
        raise RuntimeError("the client left")
    with slots.hold(("k", None)):
        assert slots.total == 1
    assert slots.total == 0 and slots._open == {}


def test_the_same_user_under_another_key_is_another_caller() -> None:
    slots = StreamSlots(total_max=10, per_user_max=1)
    with slots.hold(("edge", 7)), slots.hold(("auth-center", 7)):
        assert slots.total == 2
