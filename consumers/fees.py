"""Fees (VALIDATED -> PRICED | REJECTED): price the intent.

No fee rules are configured yet (the money-rules issue brings CEL rules): every intent is priced at
zero PRE and zero POST fee, and records that no rule priced it.
"""

from __future__ import annotations

from consumers.context import StageContext
from pm.domain import Intent, State, Transition, advance


def price(intent: Intent) -> tuple[int, int, tuple[dict[str, object], ...]]:
    """(PRE fee, POST fee, the rules that priced it) in minor units."""
    return 0, 0, ()


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    transitions = []
    for intent in intents:
        fee_pre_minor, fee_post_minor, rules = price(intent)
        transitions.append(
            advance(
                intent,
                State.PRICED,
                fee_pre_minor=fee_pre_minor,
                fee_post_minor=fee_post_minor,
                fee_rules=rules,
            )
        )
    return transitions
