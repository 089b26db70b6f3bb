"""Dispatch (CLEARED -> AUTHORIZED | REJECTED): hold the money in the ledger, through the channel.

The hold is a pending transfer into transit (the channel's `authorize`); all holds of a batch go in one
ledger request. Insufficient funds -> REJECTED `INSUFFICIENT_FUNDS` with nothing held. External
channels then send their authorized intents to their PSP (`submit_one`, idempotent by the intent id);
a channel with a PSP connector (top-ups) gets a job on the connector's stream instead, and stays
CLEARED until the connector has created the payment request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import tigerbeetle as tb

import channels
from consumers.chains import S, run_chains
from consumers.context import StageContext
from pm import streams
from pm.domain import ErrorCode, Intent, State, Transition, advance, reject
from pm.psp_client import PspUnavailable

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
    chains = [(intent, channels.channel_of(intent).authorize(intent)) for intent in intents]
    transitions = []
    jobs: dict[str, list[Intent]] = {}  # connector stream -> held intents its connector authorizes (top-ups)
    authorized_by_channel: dict[str, list[Intent]] = {}
    for outcome in await run_chains(context, chains):
        intent = outcome.intent
        if outcome.in_ledger:
            channel = channels.channel_of(intent)
            if channel.via_connector:
                jobs.setdefault(context.topology.connector_of(channel.name).stream, []).append(intent)
                continue
            transitions.append(advance(intent, State.AUTHORIZED))
            authorized_by_channel.setdefault(str(intent.channel), []).append(intent)
            continue
        refusal = REFUSALS.get(outcome.cause) if outcome.cause else None
        if refusal is None:
            raise LedgerAnswerError(f"hold of intent {intent.id}: ledger answered {[s.name for s in outcome.statuses]}")
        transitions.append(reject(intent, *refusal))
    if jobs:
        await put_jobs(context, jobs)
    await submit_to_psps(context, authorized_by_channel)
    return transitions


async def put_jobs(context: StageContext, jobs: dict[str, list[Intent]]) -> None:
    """Hand held intents of a connector's channel to it (one pipeline): they stay CLEARED until the
    connector has the PSP's answer. A job written twice (a redelivered batch) is harmless: the
    connector's request is idempotent and its transition a compare-and-set."""
    async with context.redis.pipeline(transaction=False) as pipe:
        for stream, intents in jobs.items():
            for intent in intents:
                pipe.xadd(stream, streams.entry_fields(intent))
        await pipe.execute()


async def submit_to_psps(context: StageContext, authorized_by_channel: dict[str, list[Intent]]) -> None:
    """First try at sending each held payout to its PSP, all at once and each bounded in time. A PSP that
    does not answer fails nothing here: the intent is AUTHORIZED either way, and settlement (now, and
    whenever the poller re-drives it) asks the PSP and submits again by the same reference."""
    sends: list[tuple[Intent, Awaitable[str]]] = []
    for authorized in authorized_by_channel.values():
        channel = channels.channel_of(authorized[0])
        if channel.settles_instantly:
            continue
        assert context.psp is not None, "a stage context always has a PSP client"
        sends.extend((intent, channel.submit_one(intent, context.psp)) for intent in authorized)
    results = await asyncio.gather(*(send for _, send in sends), return_exceptions=True)
    for (intent, _), result in zip(sends, results, strict=True):
        if isinstance(result, PspUnavailable):
            log.warning("payout not submitted yet; settlement retries", extra={"intent_id": str(intent.id)})
        elif isinstance(result, BaseException):
            raise result
