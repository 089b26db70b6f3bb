"""Validation (CREATED -> VALIDATED | REJECTED): is this intent something we can carry out?

Checks: the currency has a ledger, the parties fit the operation type (pm/domain/parties.py: the same
table the gateway checks), there is an enabled route for the amount in the intent's currency
(pm.payment_route; routes that would take it in other currencies only: UNSUPPORTED_CURRENCY, none at all:
NO_ROUTE), its channel exists, carries the operation type and the currency (a PSP channel only its PSP's:
UNSUPPORTED_CURRENCY, before anything is held), and the channel's own checks pass. Then the ledger
accounts the intent will touch are created (first use; `exists` is success) with one ledger call for the
whole batch.

A MINIAPP_CHARGE needs its user's consent (sql/0018): one that an allowance the user granted its
merchant covers (what is left of today's cap, reserved in pm/store/allowances.py) goes on VALIDATED;
any other waits AWAITING_CONFIRMATION (nothing held, no stage reads it) for POST /intents/{id}/confirm
or the status poller's expiry.
"""

from __future__ import annotations

import tigerbeetle as tb

import channels
from consumers.context import StageContext
from ledger.accounts import CURRENCY_LEDGER, NamedAccount
from pm.domain.intent import ErrorCode, Intent, OperationType, State, Transition, advance, reject
from pm.domain.limits import WALLET_TIME_ZONE
from pm.domain.parties import party_refusal
from pm.domain.rules import Rules
from pm.store import allowances

OK_ACCOUNT_STATUSES = (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS)


class AccountCreationError(RuntimeError):
    """The ledger refused to create an account; a bug or a misconfigured ledger, never user input."""


def decide(intent: Intent, rules: Rules) -> Transition:
    if intent.currency not in CURRENCY_LEDGER:
        return reject(intent, ErrorCode.UNSUPPORTED_CURRENCY, f"currency {intent.currency} is not supported")
    refusal = party_refusal(intent)  # the operation type's parties (pm/domain/parties.py)
    if refusal is not None:
        return reject(intent, *refusal)
    route = rules.route_for(str(intent.operation_type), intent.amount_minor, intent.currency)
    if route is None:
        return reject(intent, *rules.no_route(str(intent.operation_type), intent.amount_minor, intent.currency))
    channel = channels.channel_named(route.channel)
    if channel is None or intent.operation_type not in channel.operation_types:
        return reject(intent, ErrorCode.CHANNEL_UNAVAILABLE, f"channel {route.channel} is not available")
    if intent.currency not in channel.currencies:
        # The admin API keeps routes to what their channel carries; this holds against a row edited by hand.
        carried = ", ".join(sorted(channel.currencies))
        message = f"channel {channel.name} does not carry {intent.currency}; it carries {carried}"
        return reject(intent, ErrorCode.UNSUPPORTED_CURRENCY, message)
    refusal = channel.refusal(intent)
    if refusal is not None:
        return reject(intent, *refusal)
    return advance(intent, State.VALIDATED, channel=route.channel)


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    rules = await context.rules.current(context.pool)
    transitions = await _ask_consent(intents, [decide(intent, rules) for intent in intents], context)
    needed: dict[int, NamedAccount] = {}
    for intent, transition in zip(intents, transitions, strict=True):
        if transition.new in (State.VALIDATED, State.AWAITING_CONFIRMATION):
            channel = channels.channel_named(transition.channel)
            assert channel is not None
            for account in channel.accounts(intent):
                needed[account.id] = account
    unknown = [needed[account_id] for account_id in context.known_accounts.unknown(list(needed))]
    results = await context.create_accounts([account.to_tigerbeetle() for account in unknown])
    refused = [
        (account.name, result.status.name)
        for account, result in zip(unknown, results, strict=True)
        if result.status not in OK_ACCOUNT_STATUSES
    ]
    if refused:
        raise AccountCreationError(f"ledger refused accounts: {refused}")
    context.known_accounts.add([account.id for account in unknown])
    return transitions


async def _ask_consent(intents: list[Intent], transitions: list[Transition], context: StageContext) -> list[Transition]:
    """A valid MINIAPP_CHARGE goes on only within its user's allowance for its merchant; else it waits."""
    charges = [
        intent
        for intent, transition in zip(intents, transitions, strict=True)
        if transition.new == State.VALIDATED and intent.operation_type == OperationType.MINIAPP_CHARGE
    ]
    if not charges:
        return transitions
    covered = await allowances.reserve(context.pool, [reservation_of(intent) for intent in charges])
    waiting = {intent.id for intent in charges if intent.id not in covered}
    return [
        advance(intent, State.AWAITING_CONFIRMATION, channel=transition.channel) if intent.id in waiting else transition
        for intent, transition in zip(intents, transitions, strict=True)
    ]


def reservation_of(intent: Intent) -> allowances.Reservation:
    """A charge counts on the day (Asia/Bangkok) it was created, whichever delivery reserves it."""
    assert intent.sender_id is not None and intent.merchant_id is not None and intent.created_at is not None
    return allowances.Reservation(
        intent_id=intent.id,
        user_id=intent.sender_id,
        merchant_id=intent.merchant_id,
        currency=intent.currency,
        day=intent.created_at.astimezone(WALLET_TIME_ZONE).date(),
        amount_minor=intent.amount_minor,
    )
