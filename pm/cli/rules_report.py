"""`pm rules test`: the active fee rules from the database, evaluated for one made-up intent.

    report = await rules_test(connection, request, engine)
    print(format_report(report))

Shows every candidate rule (enabled, valid now, same operation type and channel or any) with its own
verdict (matched and its fee, no match, or its error), which rule of each kind prices the intent, and
the fees, or the refusal the intent would get. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from pm.domain.cel import Engine
from pm.domain.pricing import WALLET_TIME_ZONE, Fees, PricingError, PricingRequest, RuleOutcome, RuleSet
from pm.domain.rules import choose_route
from pm.store import fee_rules, payment_routes


@dataclass(frozen=True, slots=True)
class RulesTestReport:
    request: PricingRequest
    engine_name: str
    outcomes: list[RuleOutcome]
    fees: Fees | None
    refusal: PricingError | None

    def to_json(self) -> dict[str, Any]:
        applied = {(rule.id, rule.version) for rule in self.fees.rules} if self.fees else set()
        return {
            "engine": self.engine_name,
            "channel": self.request.channel,
            "hour": self.request.at.astimezone(WALLET_TIME_ZONE).hour,
            "rules": [
                {
                    "id": outcome.rule.id,
                    "version": outcome.rule.version,
                    "name": outcome.rule.name,
                    "kind": str(outcome.rule.kind),
                    "priority": outcome.rule.priority,
                    "matched": outcome.matched,
                    "fee_minor": outcome.fee_minor,
                    "error": outcome.error,
                    "applied": (outcome.rule.id, outcome.rule.version) in applied,
                }
                for outcome in self.outcomes
            ],
            "quote": self.fees.quote(self.request.amount_minor) if self.fees else None,
            "refusal": {"code": str(self.refusal.code), "message": self.refusal.message} if self.refusal else None,
        }


async def channel_for(
    connection: asyncpg.Connection, operation_type: str, amount_minor: int, currency: str
) -> str | None:
    """The channel validation would route the intent to (None: no enabled route serves it)."""
    routes = await payment_routes.load_enabled_routes(connection)
    route = choose_route(routes, operation_type, amount_minor, currency)
    return route.channel if route is not None else None


async def rules_test(connection: asyncpg.Connection, request: PricingRequest, engine: Engine) -> RulesTestReport:
    rules = RuleSet(engine, await fee_rules.load_enabled_rules(connection))
    outcomes = rules.explain(request)
    try:
        return RulesTestReport(request, engine.name, outcomes, rules.price(request), None)
    except PricingError as exc:
        return RulesTestReport(request, engine.name, outcomes, None, exc)


def format_report(report: RulesTestReport) -> str:
    data = report.to_json()
    request = report.request
    lines = [
        f"{request.operation_type} {request.amount_minor} {request.currency} (minor units), channel "
        f"{request.channel or '-'}, tags {','.join(request.tags) or '-'}, hour {data['hour']} (Asia/Bangkok), "
        f"engine {report.engine_name}",
        f"{len(data['rules'])} candidate rule(s):" if data["rules"] else "no candidate rule",
    ]
    for rule in data["rules"]:
        if rule["error"]:
            verdict = f"ERROR {rule['error']}"
        elif rule["matched"]:
            verdict = f"matched, fee {rule['fee_minor']}"
        else:
            verdict = "no match"
        mark = "  <- prices the intent" if rule["applied"] else ""
        lines.append(
            f"  #{rule['id']} v{rule['version']} {rule['kind']:4} priority {rule['priority']:<5} {rule['name']}: "
            f"{verdict}{mark}"
        )
    if data["refusal"]:
        lines.append(f"refused: {data['refusal']['code']}: {data['refusal']['message']}")
    else:
        lines.extend(f"{name}: {value}" for name, value in data["quote"].items() if name != "rules")
    return "\n".join(lines)
