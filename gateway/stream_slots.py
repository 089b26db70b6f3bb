"""Bounds on open Server-Sent Event streams (GET /intents/{id}/events) in one gateway process.

Each open stream holds a subscription, a socket and a PostgreSQL read every quiet ping interval, for up
to PM_SSE_DURATION_S_MAX. Unbounded, one caller could hold thousands: the nginx edge lets a user start
20 requests a second, and every app user comes with the edge's one key. So a process keeps at most
`per_user_max` streams per (API key, X-User-Id) (429 RATE_LIMITED beyond: that caller has enough open)
and `total_max` in all (503 OVERLOADED beyond: this process has enough).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gateway.errors import ApiError, overloaded
from gateway.metrics import SSE_STREAMS_OPEN, SSE_STREAMS_REFUSED
from pm.domain.intent import ErrorCode

RETRY_AFTER_S = 5

Holder = tuple[str, int | None]  # (API key id, X-User-Id)


class StreamSlots:
    def __init__(self, total_max: int, per_user_max: int) -> None:
        assert 1 <= per_user_max <= total_max, (per_user_max, total_max)
        self.total_max = total_max
        self.per_user_max = per_user_max
        self._open: dict[Holder, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @contextlib.contextmanager
    def hold(self, holder: Holder) -> Iterator[None]:
        """One slot for the stream's lifetime, or the refusal (nothing held)."""
        held = self._open.get(holder, 0)
        if held >= self.per_user_max:
            SSE_STREAMS_REFUSED.labels("per_user").inc()
            message = f"at most {self.per_user_max} event streams are open at once for one user; close one first"
            raise ApiError(429, ErrorCode.RATE_LIMITED, message, {"Retry-After": str(RETRY_AFTER_S)})
        if self._total >= self.total_max:
            SSE_STREAMS_REFUSED.labels("total").inc()
            raise overloaded(f"this gateway process has {self.total_max} event streams open; retry shortly")
        self._open[holder] = held + 1
        self._total += 1
        SSE_STREAMS_OPEN.inc()
        try:
            yield
        finally:
            self._total -= 1
            SSE_STREAMS_OPEN.dec()
            left = self._open[holder] - 1
            if left:
                self._open[holder] = left
            else:
                del self._open[holder]  # no entry per caller that once streamed: the dict stays bounded
            assert self._total >= 0 and left >= 0, (self._total, left)
