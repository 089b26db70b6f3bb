"""Per-key request rates: a token bucket per API key id, in this gateway process's memory.

    limiter = RateLimiter()
    wait_s = limiter.admit(key.key_id, key.requests_per_s)   # None: admitted; else seconds until a token

A key's bucket holds `requests_per_s` tokens (one second of its rate: a caller may send that many at
once) and refills continuously at `requests_per_s`; each admitted request takes one token. The check runs
after the signature is verified (gateway/auth.py), so only a key's own signed requests spend its
tokens: a stranger who knows a key id cannot use up its budget, and an unsigned flood costs nothing
here. It reads nothing but the cached key, so a refused request costs no PostgreSQL or Redis round trip.

One bucket per process: with N gateway processes (or machines) behind one address, a key may get up to
N times its rate in all, each process enforcing its own share. We chose that over a shared bucket in
Redis because the refusal then costs no round trip at all (the point of a limit is to shed load
cheaply) and because the kernel (`reuse_port`) or a load balancer spreads one caller's connections
roughly evenly; an operator who runs N gateways and wants a total of R sets the key's rate to R / N.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pm.config.constants import API_KEY_CACHE_ENTRIES_MAX


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_at_s: float


class RateLimiter:
    """Token buckets by key id (module docstring). Not thread-safe: one event loop uses it."""

    def __init__(
        self, entries_max: int = API_KEY_CACHE_ENTRIES_MAX, clock_s: Callable[[], float] = time.monotonic
    ) -> None:
        assert entries_max >= 1, entries_max
        self._entries_max = entries_max
        self._clock_s = clock_s
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, key_id: str, requests_per_s: int) -> float | None:
        """Take a token from the key's bucket: None when there was one; else how long until there is."""
        assert requests_per_s >= 1, requests_per_s
        now_s = self._clock_s()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= self._entries_max:
                # Only verified keys get here, so this takes more keys than exist; start over, not grow.
                self._buckets.clear()
            bucket = _Bucket(tokens=float(requests_per_s), refilled_at_s=now_s)
            self._buckets[key_id] = bucket
        else:
            # A rate changed since (`pm keys set-rate`) applies from here on: the bucket never holds
            # more than one second of the key's current rate.
            elapsed_s = max(0.0, now_s - bucket.refilled_at_s)
            bucket.tokens = min(float(requests_per_s), bucket.tokens + elapsed_s * requests_per_s)
            bucket.refilled_at_s = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / requests_per_s
