"""The money rules a process applies, as one snapshot of one rule generation: routes, limit rules and fee
rules (DESIGN.md §3, §6). No I/O: pm/store/rules.py loads a snapshot from PostgreSQL and keeps it fresh;
a unit test builds one by hand.

    rules = Rules(generation=1, routes=(Route("P2P_TRANSFER", 1, 10**9, "INTERNAL_P2P", 10),),
                  limit_rules=(), fees=RuleSet(ProductionEngine(), []))
    rules.route_for("P2P_TRANSFER", 5_000)      # the route validation would take, or None
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pm.domain.limits import LimitRule
from pm.domain.pricing import RuleSet


@dataclass(frozen=True, slots=True)
class Route:
    """Intents of `operation_type` with an amount in [min, max] go to `channel`; the lowest priority wins."""

    operation_type: str
    min_amount_minor: int
    max_amount_minor: int
    channel: str
    priority: int


@dataclass(frozen=True, slots=True)
class Rules:
    generation: int
    routes: tuple[Route, ...]  # enabled ones, best (lowest) priority first
    limit_rules: tuple[LimitRule, ...]  # enabled ones
    fees: RuleSet  # enabled fee rules, compiled

    def __post_init__(self) -> None:
        assert list(self.routes) == sorted(self.routes, key=lambda route: route.priority), "best priority first"

    def route_for(self, operation_type: str, amount_minor: int) -> Route | None:
        return choose_route(self.routes, operation_type, amount_minor)


def choose_route(routes: Iterable[Route], operation_type: str, amount_minor: int) -> Route | None:
    """The first route (routes come best priority first) of the operation type whose range holds the amount."""
    for route in routes:
        if route.operation_type != operation_type:
            continue
        if route.min_amount_minor <= amount_minor <= route.max_amount_minor:
            return route
    return None
