"""Fees (VALIDATED -> PRICED | REJECTED): price each intent with the CEL fee rules (pm/domain/pricing.py).

One batch: the process's rule cache (at most one generation query per 0.5 s, a reload when rules
changed), then every intent priced in memory, no SQL per intent. A priced intent records its PRE and
POST fees and the rules that priced it (`fee_rules`: id, version, kind, fee), so a later edit of a rule
never changes it. A broken rule or a POST fee equal to the amount or above it rejects the intent before
any money is held (FEE_RULE_ERROR / FEE_EXCEEDS_AMOUNT), as does a fee above the bound the caller sent
with it (`max_fee_pre_minor` / `max_fee_post_minor`: FEE_CHANGED), so an edit between the quote and the
pricing never charges a fee the user did not agree to. A rule prices only intents of its currency.
"""

from __future__ import annotations

import logging

from consumers.context import StageContext
from pm.domain.intent import Intent, State, Transition, advance, reject
from pm.domain.pricing import PricingError, PricingRequest, RuleSet, check_fee_bounds

log = logging.getLogger("pm.consumers.fees")


def pricing_request(intent: Intent) -> PricingRequest:
    # Priced at the time the intent was made, so a redelivery sees the same validity windows and hour.
    assert intent.created_at is not None, "intents come from pm.intent, which stamps created_at"
    return PricingRequest(
        operation_type=str(intent.operation_type),
        channel=intent.channel,
        amount_minor=intent.amount_minor,
        currency=intent.currency,
        tags=intent.tags,
        sender_id=intent.sender_id,
        recipient_id=intent.recipient_id,
        at=intent.created_at,
    )


def price(intent: Intent, rules: RuleSet) -> Transition:
    """The fees stage's decision for one intent: PRICED with its fees, or REJECTED."""
    try:
        fees = rules.price(pricing_request(intent))
        check_fee_bounds(fees, intent.max_fee_pre_minor, intent.max_fee_post_minor)
    except PricingError as exc:
        if exc.rule_id is not None:  # a rule an operator must fix, not the user's doing
            log.warning(
                "a fee rule failed; intent rejected",
                extra={"intent_id": str(intent.id), "rule_id": exc.rule_id, "error": exc.message},
            )
        return reject(intent, exc.code, exc.message)
    return advance(
        intent,
        State.PRICED,
        fee_pre_minor=fees.fee_pre_minor,
        fee_post_minor=fees.fee_post_minor,
        fee_rules=tuple(rule.to_json() for rule in fees.rules),
    )


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    rules = await context.rules.current(context.pool)
    return [price(intent, rules.fees) for intent in intents]
