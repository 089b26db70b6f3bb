"""The fee rules of one process, reloaded within a second of any change in any process.

    cache = FeeRuleCache()                   # one per process (the fees stage's context, the gateway)
    rules = await cache.current(pool)        # a pricing.RuleSet; at most one cheap query per 0.5 s

A `GenerationCache` (pm/store/generation_cache.py: when and how a change is seen) whose value is a compiled
`RuleSet`: rules whose (id, version) did not change keep their compiled programs. A failed read raises
(the fees stage retries the batch; the gateway answers 503): no process prices on rules it cannot
vouch for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.domain.cel import Engine, ProductionEngine
from pm.domain.pricing import RuleSet
from pm.store import fee_rules
from pm.store.generation_cache import GenerationCache, Pool

log = logging.getLogger("pm.rules")


class FeeRuleCache(GenerationCache[RuleSet]):
    def __init__(
        self,
        engine: Engine | None = None,
        poll_interval_s: float = RULES_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(self._compile, poll_interval_s, clock)
        self.engine: Engine = engine or ProductionEngine()

    async def _compile(self, pool: Pool, previous: RuleSet | None, generation: int) -> RuleSet:
        loaded = await fee_rules.load_enabled_rules(pool)
        rules = RuleSet(self.engine, loaded, previous=previous, generation=generation)
        broken = [c.rule.id for c in rules.rules if c.compile_error is not None]
        log.info("fee rules loaded", extra={"generation": generation, "rules": len(loaded), "broken": broken})
        return rules
