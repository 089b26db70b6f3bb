"""POST /quote: what an intent would cost, before the user confirms. Nothing is created or stored.

The same signing, scope and body as POST /intents (the same pydantic model and checks, the same parties
from X-User-Id), no Idempotency-Key. The channel is chosen as validation chooses it (the enabled route
with the best priority for the amount), and the fees come from the same rules and pricing as the fees
stage, at the current time:

    {"fee_pre_minor", "fee_post_minor", "sender_debit_minor", "recipient_credit_minor",
     "rules": [{"id", "version", "kind", "fee_minor"}]}

Refusals are those the intent would meet in the pipeline, as 422 with the intent's code: NO_ROUTE,
UNSUPPORTED_CURRENCY (routes take the operation and amount, none in this currency), FEE_RULE_ERROR (a rule
failed to evaluate; its id is in the message), FEE_EXCEEDS_AMOUNT (a POST fee not below the amount),
and FEE_CHANGED for a fee above the body's `max_fee_pre_minor` / `max_fee_post_minor` (as the fees stage
would refuse it). Only the rules of the body's currency price it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from gateway.auth import acting_user
from gateway.errors import json_response, validation_failed
from gateway.intents import parties
from gateway.models import IntentLimits, parse_intent_request
from gateway.resources import API_KEY, DATABASE, SETTINGS
from pm.domain.pricing import PricingError, PricingRequest, check_fee_bounds
from pm.store.rules import RulesCache

# Set by create_app: this process's fee rules and routes, each re-read when they change.
RULES = web.AppKey("rules", RulesCache)


async def quote(request: web.Request) -> web.Response:
    app = request.app
    body = await request.read()
    intent_request = parse_intent_request(body, IntentLimits.from_settings(app[SETTINGS]))
    who = parties(intent_request, request[API_KEY], acting_user(request, required=False))
    pool = app[DATABASE]
    rules = await app[RULES].current(pool)
    wanted = (intent_request.operation_type, intent_request.amount_minor, intent_request.currency)
    route = rules.route_for(*wanted)
    if route is None:
        code, message = rules.no_route(*wanted)
        raise validation_failed(message, code)
    pricing_request = PricingRequest(
        operation_type=intent_request.operation_type,
        channel=route.channel,
        amount_minor=intent_request.amount_minor,
        currency=intent_request.currency,
        tags=intent_request.metadata.tags,
        sender_id=who.sender_id,
        recipient_id=who.recipient_id,
        at=datetime.now(UTC),
    )
    try:
        fees = rules.fees.price(pricing_request)
        check_fee_bounds(fees, intent_request.max_fee_pre_minor, intent_request.max_fee_post_minor)
    except PricingError as exc:
        raise validation_failed(exc.message, exc.code) from None
    return json_response(fees.quote(intent_request.amount_minor))


def add_resources(app: web.Application) -> None:
    """Called by create_app: the caches start empty and load on the first quote."""
    app[RULES] = RulesCache()
