"""Proves the per-key token bucket (gateway/rate_limit.py) on a fake clock: a key may burst its rate at
once and then sustain it, the refusal says how long until the next token, one key's burst takes nothing
from another's bucket, a changed rate applies at once (never more than one second of it saved up), and
the table of buckets stays bounded."""

from __future__ import annotations

import pytest

from gateway.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def admitted(limiter: RateLimiter, key_id: str, rate: int, requests: int) -> int:
    return sum(limiter.admit(key_id, rate) is None for _ in range(requests))


def test_a_key_bursts_its_rate_then_gets_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock_s=clock)
    assert admitted(limiter, "a", 10, 25) == 10
    wait_s = limiter.admit("a", 10)
    assert wait_s == pytest.approx(0.1)
    clock.now_s += 0.25  # two and a half tokens
    assert admitted(limiter, "a", 10, 5) == 2
    assert limiter.admit("a", 10) == pytest.approx(0.05)
    clock.now_s += 100.0  # idle for long: still only one second of the rate saved up
    assert admitted(limiter, "a", 10, 25) == 10


def test_one_keys_burst_leaves_another_keys_bucket_alone() -> None:
    clock = Clock()
    limiter = RateLimiter(clock_s=clock)
    assert admitted(limiter, "noisy", 5, 50) == 5
    assert admitted(limiter, "quiet", 5, 5) == 5
    assert limiter.admit("noisy", 5) is not None


def test_a_lowered_rate_applies_at_once_and_a_raised_one_refills_faster() -> None:
    clock = Clock()
    limiter = RateLimiter(clock_s=clock)
    assert admitted(limiter, "a", 100, 10) == 10  # 90 tokens left
    assert admitted(limiter, "a", 3, 10) == 3  # capped to one second of the new rate
    clock.now_s += 0.1
    assert admitted(limiter, "a", 1_000, 200) == 100


def test_the_table_of_buckets_is_bounded() -> None:
    limiter = RateLimiter(entries_max=3, clock_s=Clock())
    for n in range(10):
        assert limiter.admit(f"k{n}", 1) is None
        assert len(limiter._buckets) <= 3
