"""Dispatch (CLEARED -> AUTHORIZED | REJECTED | FAILED): hold the money in the ledger, through the channel.

The hold is a pending transfer into transit (the channel's `authorize`); all holds of a batch go in one
ledger request. Insufficient funds -> REJECTED `INSUFFICIENT_FUNDS` with nothing held.

A hold the ledger answers `exists` for was placed by an earlier attempt (a redelivery, a re-drive after a
lost compare-and-set, or a PSP connector that could not reach its PSP): it counts as held only if it still
is, so those are looked up (one lookup for the batch, consumers/holds.py). Expired or voided: the intent
fails `EXPIRED` (the void is repeated, harmless, so the release is certain), and a PSP channel's payment
is watched at its PSP in case an earlier submit reached it (consumers/psp_watch.py). Posted: the intent went on
long ago and this entry is stale.

A held intent of an instant channel becomes AUTHORIZED (settlement posts it next). A PSP channel's
(payouts, top-ups) gets a job on its connector's stream instead and stays CLEARED: the connector is the
one place a payment is submitted (consumers/psp_connector.py). Dispatch never calls a PSP.
"""

from __future__ import annotations

import logging

import tigerbeetle as tb

import channels
from consumers import psp_watch
from consumers.chains import LedgerAnswerError, S, run_chains
from consumers.context import StageContext
from consumers.holds import look_up_holds, release
from pm.domain.intent import ErrorCode, Intent, State, Transition, advance, reject
from pm.redis import streams

log = logging.getLogger("pm.consumers.dispatch")

REFUSALS: dict[tb.CreateTransferStatus, tuple[ErrorCode, str]] = {
    S.EXCEEDS_CREDITS: (ErrorCode.INSUFFICIENT_FUNDS, "the balance does not cover the amount and fees"),
    # The same hold id was refused before (TigerBeetle remembers transient failures): the earlier
    # attempt found the balance short, and this attempt must not succeed under the same id.
    S.ID_ALREADY_FAILED: (ErrorCode.INSUFFICIENT_FUNDS, "an earlier attempt of this hold was refused"),
    S.DEBIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "the paying account is closed"),
    S.CREDIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "the receiving account is closed"),
}

__all__ = ["LedgerAnswerError", "handle"]


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    chains = [(intent, channels.channel_of(intent).authorize(intent)) for intent in intents]
    outcomes = await run_chains(context, chains)
    placed_before = [outcome.intent for outcome in outcomes if outcome.in_ledger and outcome.statuses[0] == S.EXISTS]
    holds = await look_up_holds(context, placed_before)
    placed_before_ids = {intent.id for intent in placed_before}
    now_s = context.clock()
    transitions: list[Transition] = []
    released = []
    jobs: dict[str, list[Intent]] = {}  # connector stream -> held intents it submits to their PSP
    for outcome in outcomes:
        intent = outcome.intent
        if not outcome.in_ledger:
            refusal = REFUSALS.get(outcome.cause) if outcome.cause else None
            if refusal is None:
                statuses = [s.name for s in outcome.statuses]
                raise LedgerAnswerError(f"hold of intent {intent.id}: ledger answered {statuses}")
            transitions.append(reject(intent, *refusal))
            continue
        hold = holds.get(intent.id)  # None: placed by this very request, so held
        assert (hold is None) == (intent.id not in placed_before_ids), f"`exists` but not found: {intent.id}"
        if hold is not None and not hold.live(now_s):
            if hold.posted:
                log.info("stale dispatch entry: the hold is posted", extra={"intent_id": str(intent.id)})
                continue
            released.append((intent, ErrorCode.EXPIRED, "the hold expired before the intent was authorized"))
            continue
        channel = channels.channel_of(intent)
        if channel.via_connector:
            jobs.setdefault(context.topology.connector_of(channel.name).stream, []).append(intent)
        else:
            transitions.append(advance(intent, State.AUTHORIZED))
    if released:
        failed = await release(context, released)
        transitions.extend(failed)
        # A PSP channel's earlier connector may have submitted before its answer was lost: watch the PSP.
        by_id = {intent.id: intent for intent, _, _ in released}
        await psp_watch.watch(
            context.pool, [t.intent_id for t in failed if channels.channel_of(by_id[t.intent_id]).via_connector]
        )
    if jobs:
        await put_jobs(context, jobs)
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
