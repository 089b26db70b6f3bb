"""Cluster time: nanoseconds since the epoch, strictly increasing across requests.

TigerBeetle timestamps every event with cluster time; the batch's timestamp is its last event's,
and no two events ever share one, even when the wall clock stalls or steps back.
"""

from __future__ import annotations

import time


def next_batch_timestamp(last_timestamp: int, event_count: int, now_ns: int | None = None) -> int:
    """The timestamp of a batch of `event_count` events (each event takes one nanosecond slot)."""
    assert event_count >= 0
    wall_ns = time.time_ns() if now_ns is None else now_ns
    return max(wall_ns, last_timestamp + max(event_count, 1))
