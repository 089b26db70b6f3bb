"""The cyclic garbage collector's settings for a long-running PM process (`pm run`).

Measured with the benchmark (README "Performance"): with CPython's defaults a stage process
spent up to a fifth of its CPU in the collector. Two causes, two settings:
- every full (oldest-generation) collection walked the ~90,000 objects the imports left behind (aiohttp,
  FastStream, pydantic, asyncpg), about 60 ms a time, and the busy stages ran one every second or two:
  `gc.freeze()` at startup moves those objects to a permanent generation that no collection walks;
- the youngest generation is collected every 700 net allocations of tracked objects, which a batch of a
  few hundred intents (its dicts, lists and records, freed again by reference counting when the batch
  ends) crosses many times over: a threshold of GC_GEN0_THRESHOLD is crossed only by objects that
  really live on. Reference counting still frees everything that is not in a cycle at once; cycles wait
  a little longer, bounded by that threshold.
"""

from __future__ import annotations

import gc

# Net allocations of GC-tracked objects before the youngest generation is collected (CPython: 700); the
# older generations keep CPython's factors (10 young collections per middle one, and so on).
GC_GEN0_THRESHOLD = 7_000


def tune_garbage_collector() -> None:
    """Collect once, freeze what survives (startup's objects), raise the youngest generation's threshold.

    Call after the process's imports and before it starts serving."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, middle, oldest)
