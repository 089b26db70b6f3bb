"""What a process keeps of the money rules (fee rules, limit rules, routes): one snapshot of them all
(pm.domain.rules.Rules), reloaded within a second of any change made by any process.

    cache = RulesCache()                             # one per process: stages, the gateway, the outbox worker
    rules = await cache.current(pool)               # at most one cheap query per poll interval
    rules.route_for("P2P_TRANSFER", 5_000); rules.limit_rules; rules.fees.price(request)

The rows are changed through their own tables (pm/store/fee_rules.py with its version rows; limit rules
and routes through pm/store/versioned_rows.py); each change bumps the rule generation, and this one cache
shape serves all three.

Every change of a rule or route bumps `pm.rule_generation` in its own transaction (pm/store/audit.py).
`current` reads the generation when its last read is older than `poll_interval_s` and calls `load`
when it moved. So a change committed at T is used by every read that starts after
T + poll_interval_s + one query, in every process, without Redis or LISTEN (a pooled connection keeps
no session state). A failed read raises: no process acts on rules it cannot vouch for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.domain.cel import Engine, ProductionEngine
from pm.domain.pricing import RuleSet
from pm.domain.rules import Rules
from pm.store import fee_rules, payment_routes
from pm.store import limit_rules as limit_rules_store
from pm.store.audit import current_rule_generation

log = logging.getLogger("pm.rules")

Value = TypeVar("Value")
Pool = asyncpg.Pool | asyncpg.Connection


class GenerationCache(Generic[Value]):
    """A value loaded from PostgreSQL, reloaded when `pm.rule_generation` moves (the module docstring)."""

    def __init__(
        self,
        load: Callable[[Pool, Value | None, int], Awaitable[Value]],
        poll_interval_s: float = RULES_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert poll_interval_s > 0
        self._load = load
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._value: Value | None = None
        self._generation: int | None = None
        self._checked_at_s = float("-inf")
        self._lock = asyncio.Lock()
        self.reloads = 0

    @property
    def generation(self) -> int | None:
        return self._generation

    async def current(self, pool: Pool) -> Value:
        if self._fresh():
            assert self._value is not None
            return self._value
        async with self._lock:  # concurrent callers (gateway requests) share one read
            if not self._fresh():
                await self._refresh(pool)
        assert self._value is not None
        return self._value

    def expire(self) -> None:
        """The next `current` reads the generation: the process that made a change uses it at once."""
        self._checked_at_s = float("-inf")

    def _fresh(self) -> bool:
        return self._value is not None and self._clock() - self._checked_at_s < self._poll_interval_s

    async def _refresh(self, pool: Pool) -> None:
        # The time before the read: a change committed after it is caught by the next poll.
        started_s = self._clock()
        generation = await current_rule_generation(pool)
        if self._value is None or generation != self._generation:
            # Generation first, rows second: a change committed in between is loaded now and again at
            # the next poll (harmless), never missed.
            self._value = await self._load(pool, self._value, generation)
            self._generation = generation
            self.reloads += 1
        self._checked_at_s = started_s


class RulesCache(GenerationCache[Rules]):
    """The rules of this process as one snapshot; fee rules whose (id, version) did not change keep their
    compiled programs. A failed read raises (a stage retries its batch; the gateway answers 503): no
    process acts on rules it cannot vouch for."""

    def __init__(
        self,
        engine: Engine | None = None,
        poll_interval_s: float = RULES_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(self._load_rules, poll_interval_s, clock)
        self.engine: Engine = engine or ProductionEngine()

    async def _load_rules(self, pool: Pool, previous: Rules | None, generation: int) -> Rules:
        loaded = await fee_rules.load_enabled_rules(pool)
        fees = RuleSet(self.engine, loaded, previous=previous.fees if previous else None, generation=generation)
        broken = [c.rule.id for c in fees.rules if c.compile_error is not None]
        log.info("rules loaded", extra={"generation": generation, "fee_rules": len(loaded), "broken": broken})
        routes = await payment_routes.load_enabled_routes(pool)
        return Rules(generation, routes, await limit_rules_store.load_enabled_rules(pool), fees)
