"""The rules cache (one snapshot of routes, limit rules and fee rules) reads the rule generation at most
once per poll interval, reloads the rules only when the generation moved, so a change is used at most one
poll interval (0.5 s) after it commits, and keeps the compiled programs of fee rules that did not change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.domain.cel import ProductionEngine
from pm.domain.pricing import PricingRequest
from pm.store.rules import RulesCache

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REQUEST = PricingRequest("P2P_TRANSFER", "INTERNAL_P2P", 10_000, "THB", (), 1, 2, NOW)


class FakeDatabase:
    """Answers the cache's queries like pm.rule_generation, pm.fee_rule, pm.payment_route and pm.limit_rule
    would (no routes or limit rules here), and counts the generation and fee rule reads."""

    def __init__(self) -> None:
        self.generation = 1
        self.rows: list[dict[str, Any]] = []
        self.generation_reads = 0
        self.rule_reads = 0

    async def fetchval(self, query: str, *args: object) -> int:
        assert "rule_generation" in query
        self.generation_reads += 1
        return self.generation

    async def fetch(self, query: str, *args: object) -> list[dict[str, Any]]:
        if "pm.payment_route" in query or "pm.limit_rule" in query:
            return []
        assert "pm.fee_rule" in query
        self.rule_reads += 1
        return [dict(row) for row in self.rows]

    def save(self, rule_id: int, version: int, amount: str) -> None:
        """A committed change: the row and a generation bump."""
        self.rows = [row for row in self.rows if row["id"] != rule_id]
        self.rows.append(
            {
                "id": rule_id, "version": version, "name": "r", "operation_type": None, "channel": None,
                "condition": "true", "amount": amount, "kind": "PRE", "priority": 1, "min_fee_minor": 0,
                "max_fee_minor": None, "valid_from": None, "valid_to": None, "enabled": True,
                "currency": "THB", "created_at": NOW, "updated_at": NOW,
            }
        )  # fmt: skip
        self.generation += 1


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


async def test_a_change_is_seen_within_one_poll_interval_with_one_query_per_interval() -> None:
    database, clock = FakeDatabase(), Clock()
    cache = RulesCache(ProductionEngine(), clock=clock)
    assert (await cache.current(database)).fees.price(REQUEST).fee_pre_minor == 0
    assert (database.generation_reads, database.rule_reads) == (1, 1)

    database.save(1, 1, "25")
    for _ in range(100):  # a busy stage within one interval: no query at all
        await cache.current(database)
    assert database.generation_reads == 1

    clock.now_s += RULES_POLL_INTERVAL_S
    assert (await cache.current(database)).fees.price(REQUEST).fee_pre_minor == 25
    assert (database.generation_reads, database.rule_reads) == (2, 2)

    clock.now_s += RULES_POLL_INTERVAL_S
    await cache.current(database)  # the generation did not move: no reload
    assert (database.generation_reads, database.rule_reads, cache.reloads) == (3, 2, 2)


async def test_unchanged_rules_keep_their_compiled_programs() -> None:
    database, clock = FakeDatabase(), Clock()
    database.save(1, 1, "25")
    database.save(2, 1, "30")
    cache = RulesCache(ProductionEngine(), clock=clock)
    before = {c.rule.id: c for c in (await cache.current(database)).fees.rules}
    database.save(2, 2, "35")
    clock.now_s += RULES_POLL_INTERVAL_S
    after = {c.rule.id: c for c in (await cache.current(database)).fees.rules}
    assert after[1] is before[1] and after[2] is not before[2]
    assert after[2].rule.version == 2
