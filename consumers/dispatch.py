"""Dispatch (CLEARED -> AUTHORIZED | REJECTED): hold the money in the ledger, through the channel.

The hold is a pending transfer into transit (the channel's `authorize`); all holds of a batch go in one
ledger request. Insufficient funds -> REJECTED `INSUFFICIENT_FUNDS` with nothing held. External
channels then hand their authorized intents to their PSP (`submit`).
"""

from __future__ import annotations

import logging

import tigerbeetle as tb

import channels
from consumers.chains import S, run_chains
from consumers.context import StageContext
from pm.domain import ErrorCode, Intent, State, Transition, advance, reject

log = logging.getLogger("pm.consumers.dispatch")

REFUSALS: dict[tb.CreateTransferStatus, tuple[ErrorCode, str]] = {
    S.EXCEEDS_CREDITS: (ErrorCode.INSUFFICIENT_FUNDS, "the balance does not cover the amount and fees"),
    # The same hold id was refused before (TigerBeetle remembers transient failures): the earlier
    # attempt found the balance short, and this attempt must not succeed under the same id.
    S.ID_ALREADY_FAILED: (ErrorCode.INSUFFICIENT_FUNDS, "an earlier attempt of this hold was refused"),
    S.DEBIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "the paying account is closed"),
    S.CREDIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "the receiving account is closed"),
}


class LedgerAnswerError(RuntimeError):
    """The ledger answered something no correct request can get: a bug to look at, not to reject."""


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    chains = []
    for intent in intents:
        channel = channels.channel_named(intent.channel)
        assert channel is not None, f"validation routed {intent.id} to unknown channel {intent.channel}"
        chains.append((intent, channel.authorize(intent)))
    transitions = []
    authorized_by_channel: dict[str, list[Intent]] = {}
    for outcome in await run_chains(context, chains):
        intent = outcome.intent
        if outcome.in_ledger:
            transitions.append(advance(intent, State.AUTHORIZED))
            authorized_by_channel.setdefault(str(intent.channel), []).append(intent)
            continue
        refusal = REFUSALS.get(outcome.cause) if outcome.cause else None
        if refusal is None:
            raise LedgerAnswerError(f"hold of intent {intent.id}: ledger answered {[s.name for s in outcome.statuses]}")
        transitions.append(reject(intent, *refusal))
    for channel_name, authorized in authorized_by_channel.items():
        channel = channels.channel_named(channel_name)
        assert channel is not None
        await channel.submit(authorized)
    return transitions
