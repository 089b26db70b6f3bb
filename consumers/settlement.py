"""Settlement (AUTHORIZED -> SETTLED | FAILED): post the hold and pay out, one linked chain each.

For instant channels, settlement follows authorization at once: post the pending transfer, then
transit -> recipient and transit -> fees (DESIGN.md §4), all in one linked chain, all chains of a batch
in one ledger request. A hold that expired fails the intent (`EXPIRED`, nothing to release); a payout
the ledger refuses (e.g. a closed recipient account) voids the hold and fails the intent. External
channels settle on their PSP's outcome instead (not in this stage's input yet): they are left alone.
"""

from __future__ import annotations

import tigerbeetle as tb

import channels
from consumers.chains import IN_LEDGER, ChainOutcome, S, run_chains
from consumers.context import StageContext
from consumers.dispatch import LedgerAnswerError
from pm.domain import ErrorCode, Intent, State, Transition, advance, fail

# Failures after which the hold is still pending and must be voided.
VOID_AND_FAIL: dict[tb.CreateTransferStatus, tuple[ErrorCode, str]] = {
    S.CREDIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "the receiving account is closed"),
    S.DEBIT_ACCOUNT_ALREADY_CLOSED: (ErrorCode.ACCOUNT_CLOSED, "an account of the payout is closed"),
    S.EXCEEDS_CREDITS: (ErrorCode.LEDGER_REFUSED, "the ledger refused the payout (exceeds_credits)"),
    S.EXCEEDS_DEBITS: (ErrorCode.LEDGER_REFUSED, "the ledger refused the payout (exceeds_debits)"),
    S.ID_ALREADY_FAILED: (ErrorCode.LEDGER_REFUSED, "an earlier attempt of this payout was refused"),
}
# Failures after which the hold is gone already: nothing to release.
FAIL_ONLY: dict[tb.CreateTransferStatus, tuple[ErrorCode, str]] = {
    S.PENDING_TRANSFER_EXPIRED: (ErrorCode.EXPIRED, "the hold expired before settlement"),
    S.PENDING_TRANSFER_ALREADY_VOIDED: (ErrorCode.LEDGER_REFUSED, "the hold was released before settlement"),
}
VOID_OK = (*IN_LEDGER, S.PENDING_TRANSFER_EXPIRED, S.PENDING_TRANSFER_ALREADY_VOIDED)


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    chains = []
    for intent in intents:
        channel = channels.channel_named(intent.channel)
        assert channel is not None, f"intent {intent.id} has unknown channel {intent.channel}"
        if channel.settles_instantly:
            chains.append((intent, channel.settle(intent)))
    transitions: list[Transition] = []
    to_void: list[tuple[ChainOutcome, ErrorCode, str]] = []
    for outcome in await run_chains(context, chains):
        if outcome.in_ledger:
            transitions.append(advance(outcome.intent, State.SETTLED))
        elif outcome.cause in FAIL_ONLY:
            transitions.append(fail(outcome.intent, *FAIL_ONLY[outcome.cause]))
        elif outcome.cause in VOID_AND_FAIL:
            to_void.append((outcome, *VOID_AND_FAIL[outcome.cause]))
        else:
            statuses = [s.name for s in outcome.statuses]
            raise LedgerAnswerError(f"settlement of intent {outcome.intent.id}: ledger answered {statuses}")
    if to_void:
        transitions.extend(await _void(context, to_void))
    return transitions


async def _void(context: StageContext, to_void: list[tuple[ChainOutcome, ErrorCode, str]]) -> list[Transition]:
    voids = []
    for outcome, _, _ in to_void:
        channel = channels.channel_named(outcome.intent.channel)
        assert channel is not None
        voids.append((outcome.intent, channel.void(outcome.intent)))
    transitions = []
    for (_, code, message), voided in zip(to_void, await run_chains(context, voids), strict=True):
        if not all(status in VOID_OK for status in voided.statuses):
            raise LedgerAnswerError(f"void of intent {voided.intent.id}: ledger answered {voided.statuses}")
        transitions.append(fail(voided.intent, code, message))
    return transitions
