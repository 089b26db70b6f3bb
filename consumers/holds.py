"""What the ledger says of intents' holds, read first (DESIGN.md §4: recovery reads TigerBeetle first).

    holds = await look_up_holds(context, intents)   # one lookup_transfers for the batch
    hold = holds.get(intent.id)                     # None: the intent has no hold in the ledger
    hold.live(time.time())                          # still pending: neither posted, voided nor expired

A hold is the intent's pending transfer (channels.base HOLD_LEG); its post and void have derived ids too,
so one lookup of three ids per intent tells whether the money is still held (pm.domain.intent.Hold).

    transitions = await release(context, [(intent, ErrorCode.EXPIRED, "why")])   # void, then FAILED
"""

from __future__ import annotations

import logging
import uuid

import tigerbeetle as tb

import channels
from channels.base import HOLD_LEG, POST_LEG, VOID_LEG
from consumers.chains import LedgerAnswerError, S, run_chains
from consumers.context import StageContext
from ledger.accounts import transfer_id
from pm.domain.intent import NS_PER_S, ErrorCode, Hold, Intent, Transition, fail

log = logging.getLogger("pm.consumers.holds")

LEGS = (HOLD_LEG, POST_LEG, VOID_LEG)


async def look_up_holds(context: StageContext, intents: list[Intent]) -> dict[uuid.UUID, Hold]:
    """The hold of each intent that has one, from one ledger lookup."""
    if not intents:
        return {}
    owner = {leg: {transfer_id(intent.id, leg): intent.id for intent in intents} for leg in LEGS}
    found = await context.lookup_transfers([transfer_id_ for by_id in owner.values() for transfer_id_ in by_id])
    pending: dict[uuid.UUID, tb.Transfer] = {}
    ended: dict[str, set[uuid.UUID]] = {POST_LEG: set(), VOID_LEG: set()}
    for transfer in found:
        if transfer.id in owner[HOLD_LEG]:
            intent_id = owner[HOLD_LEG][transfer.id]
            # Derived ids never collide: what answers to a hold's id is that intent's pending transfer.
            assert transfer.flags & tb.TransferFlags.PENDING and transfer.user_data_128 == intent_id.int, transfer
            pending[intent_id] = transfer
        else:
            leg = POST_LEG if transfer.id in owner[POST_LEG] else VOID_LEG
            ended[leg].add(owner[leg][transfer.id])
    return {
        intent_id: Hold(
            timestamp_s=transfer.timestamp / NS_PER_S,
            timeout_s=transfer.timeout,
            posted=intent_id in ended[POST_LEG],
            voided=intent_id in ended[VOID_LEG],
        )
        for intent_id, transfer in pending.items()
    }


# Void answers after which the hold is released: voided now or before, or expired on its own.
VOID_OK = (S.CREATED, S.EXISTS, S.PENDING_TRANSFER_EXPIRED, S.PENDING_TRANSFER_ALREADY_VOIDED)


async def release(context: StageContext, to_void: list[tuple[Intent, ErrorCode, str]]) -> list[Transition]:
    """Void each intent's hold (one ledger request) and fail the intent with its code. A hold found posted
    meanwhile (another consumer settled it: a stale entry of ours) leaves that intent alone."""
    voids = [(intent, channels.channel_of(intent).void(intent)) for intent, _, _ in to_void]
    transitions = []
    for (_, code, message), voided in zip(to_void, await run_chains(context, voids), strict=True):
        if S.PENDING_TRANSFER_ALREADY_POSTED in voided.statuses:
            log.info("void found the hold posted; the intent is settled", extra={"intent_id": str(voided.intent.id)})
            continue
        if not all(status in VOID_OK for status in voided.statuses):
            raise LedgerAnswerError(f"void of intent {voided.intent.id}: ledger answered {voided.statuses}")
        transitions.append(fail(voided.intent, code, message))
    return transitions
