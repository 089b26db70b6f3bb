"""The money rules a process applies, as one snapshot of one rule generation: routes, limit rules and fee
rules (DESIGN.md §3, §6). No I/O: pm/store/rules.py loads a snapshot from PostgreSQL and keeps it fresh;
a unit test builds one by hand.

    rules = Rules(generation=1, routes=(Route("P2P_TRANSFER", 1, 10**9, "INTERNAL_P2P", 10,
                                              currencies=frozenset({"THB"})),),
                  limit_rules=(), fees=RuleSet(ProductionEngine(), []))
    rules.route_for("P2P_TRANSFER", 5_000, "THB")      # the route validation would take, or None
    rules.no_route("P2P_TRANSFER", 5_000, "USD")       # why there is none: (UNSUPPORTED_CURRENCY, message)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pm.domain.intent import ErrorCode
from pm.domain.limits import LimitRule
from pm.domain.money import CURRENCIES
from pm.domain.pricing import RuleSet


@dataclass(frozen=True, slots=True)
class Route:
    """Intents of `operation_type` in one of `currencies` with an amount in [min, max] go to `channel`;
    the lowest priority wins."""

    operation_type: str
    min_amount_minor: int
    max_amount_minor: int
    channel: str
    priority: int
    # The ISO 4217 codes it serves (the admin API keeps them to what its channel carries). Keyword-only
    # and without a default: a route serves the currencies it names, no others.
    currencies: frozenset[str] = field(kw_only=True)

    def __post_init__(self) -> None:
        assert self.currencies and self.currencies <= CURRENCIES.keys(), self.currencies

    def takes(self, operation_type: str, amount_minor: int) -> bool:
        """Whether the route's operation type and range hold the intent, whatever its currency."""
        return self.operation_type == operation_type and self.min_amount_minor <= amount_minor <= self.max_amount_minor


@dataclass(frozen=True, slots=True)
class Rules:
    generation: int
    routes: tuple[Route, ...]  # enabled ones, best (lowest) priority first
    limit_rules: tuple[LimitRule, ...]  # enabled ones
    fees: RuleSet  # enabled fee rules, compiled

    def __post_init__(self) -> None:
        assert list(self.routes) == sorted(self.routes, key=lambda route: route.priority), "best priority first"

    def route_for(self, operation_type: str, amount_minor: int, currency: str) -> Route | None:
        return choose_route(self.routes, operation_type, amount_minor, currency)

    def no_route(self, operation_type: str, amount_minor: int, currency: str) -> tuple[ErrorCode, str]:
        """Why `route_for` found nothing, as the intent's refusal."""
        return no_route_refusal(self.routes, operation_type, amount_minor, currency)


def choose_route(routes: Iterable[Route], operation_type: str, amount_minor: int, currency: str) -> Route | None:
    """The first route (routes come best priority first) of the operation type that serves the currency
    and whose range holds the amount."""
    for route in routes:
        if currency in route.currencies and route.takes(operation_type, amount_minor):
            return route
    return None


def no_route_refusal(
    routes: Iterable[Route], operation_type: str, amount_minor: int, currency: str
) -> tuple[ErrorCode, str]:
    """UNSUPPORTED_CURRENCY when some enabled route would take the intent in another currency (the
    currency is what is missing), else NO_ROUTE."""
    served = sorted({c for route in routes if route.takes(operation_type, amount_minor) for c in route.currencies})
    if served:
        assert currency not in served, "choose_route would have found a route"
        return (
            ErrorCode.UNSUPPORTED_CURRENCY,
            f"no enabled route for {operation_type} of {amount_minor} minor units serves {currency};"
            f" routes serve {', '.join(served)}",
        )
    return ErrorCode.NO_ROUTE, f"no enabled route for {operation_type} of {amount_minor} minor units"
