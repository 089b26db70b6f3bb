"""The machine's speed now: every benchmark prints it beside its figures, since this VM's speed drifts."""

from __future__ import annotations

import time

REFERENCE_LOOP_ITERATIONS = 1_000_000


def reference_ms() -> float:
    """How long a fixed pure-Python workload takes now (best of three): this VM's speed drifts by a
    quarter between minutes, so runs compare fairly only next to this number."""
    best_s = float("inf")
    for _ in range(3):
        started_s = time.perf_counter()
        total = 0
        for i in range(REFERENCE_LOOP_ITERATIONS):
            total += i % 7
        best_s = min(best_s, time.perf_counter() - started_s)
    assert total > 0
    return round(best_s * 1000, 1)
