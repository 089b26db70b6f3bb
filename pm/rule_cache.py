"""The fee rules of one process, reloaded within a second of any change in any process.

    cache = FeeRuleCache()                   # one per process (the fees stage's context, the gateway)
    rules = await cache.current(pool)        # a pricing.RuleSet; at most one cheap query per 0.5 s

Every rule change bumps pm.rule_generation in its own transaction (pm.fee_rules). `current` reads the
generation when its last read is older than FEE_RULES_POLL_INTERVAL_S and reloads every enabled rule
when it moved; rules whose (id, version) did not change keep their compiled programs. So a change
committed at T is used by every pricing that starts after T + 0.5 s + one query, in every process,
without Redis or LISTEN (a pooled connection keeps no session state). A failed read raises (the fees
stage retries the batch; the gateway answers 503): no process prices on rules it cannot vouch for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg

from pm import fee_rules
from pm.audit import current_rule_generation
from pm.cel import Engine, ProductionEngine
from pm.constants import FEE_RULES_POLL_INTERVAL_S
from pm.pricing import RuleSet

log = logging.getLogger("pm.rules")


class FeeRuleCache:
    def __init__(
        self,
        engine: Engine | None = None,
        poll_interval_s: float = FEE_RULES_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert poll_interval_s > 0
        self.engine: Engine = engine or ProductionEngine()
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._rules: RuleSet | None = None
        self._checked_at_s = float("-inf")
        self._lock = asyncio.Lock()
        self.reloads = 0

    async def current(self, pool: asyncpg.Pool | asyncpg.Connection) -> RuleSet:
        if self._rules is not None and self._clock() - self._checked_at_s < self._poll_interval_s:
            return self._rules
        async with self._lock:  # concurrent callers (gateway requests) share one read
            if self._rules is None or self._clock() - self._checked_at_s >= self._poll_interval_s:
                await self._refresh(pool)
        assert self._rules is not None
        return self._rules

    def expire(self) -> None:
        """The next `current` reads the generation: the process that made a change prices with it at once."""
        self._checked_at_s = float("-inf")

    async def _refresh(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        # The time before the read: a change committed after it is caught by the next poll.
        started_s = self._clock()
        generation = await current_rule_generation(pool)
        if self._rules is None or generation != self._rules.generation:
            # Generation first, rules second: a change committed in between is loaded now and again
            # at the next poll (harmless), never missed.
            loaded = await fee_rules.load_enabled_rules(pool)
            self._rules = RuleSet(self.engine, loaded, previous=self._rules, generation=generation)
            self.reloads += 1
            broken = [c.rule.id for c in self._rules.rules if c.compile_error is not None]
            log.info("fee rules loaded", extra={"generation": generation, "rules": len(loaded), "broken": broken})
        self._checked_at_s = started_s
