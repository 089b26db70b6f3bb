"""Settlement (AUTHORIZED -> SETTLED | FAILED): post the hold and pay out, one linked chain each.

For instant channels, settlement follows authorization at once: post the pending transfer, then
transit -> recipient and transit -> fees (DESIGN.md §4), all in one linked chain, all chains of a batch
in one ledger request. A hold that expired fails the intent (`EXPIRED`, nothing to release); a payout
the ledger refuses (e.g. a closed recipient account) voids the hold and fails the intent. External
channels (IPPS_TRANSFER, QP_TRANSFER) settle on their PSP's outcome: a signed callback's (the gateway
puts it on this stage's stream), or the status this stage asks the PSP for (never a submit); an intent
with no outcome yet stays AUTHORIZED (the poller brings it back), and one past its channel's outcome
deadline, counted from its hold's ledger timestamp, is voided (EXPIRED).
"""

from __future__ import annotations

import asyncio
import logging

import tigerbeetle as tb

import channels
from channels.base import PspChannel
from consumers import psp_watch
from consumers.chains import LedgerAnswerError, S, run_chains
from consumers.context import StageContext
from consumers.holds import look_up_holds, release
from pm.config.constants import PSP_STATUS_QUERY_KEY_PREFIX
from pm.domain.intent import ErrorCode, Intent, State, Transition, advance, fail
from pm.domain.psp import PspOutcome, PspReportMismatch
from pm.psp.client import PspUnavailable
from pm.store import reviews

log = logging.getLogger("pm.consumers.settlement")

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


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    chains = []
    to_void: list[tuple[Intent, ErrorCode, str]] = []
    external = []
    for intent in intents:
        channel = channels.channel_of(intent)
        if channel.settles_instantly:
            chains.append((intent, channel.settle(intent)))
        else:
            external.append(intent)
    paid_out: set[object] = set()  # intents a PSP reports paid: failing one of them needs an operator
    deadline: set[object] = set()  # intents PM gives up on at its deadline: the PSP may still pay them
    mismatched: dict[object, str] = {}  # intents the PSP reported as another payment: why
    for intent, decision in await _psp_decisions(context, external, deadline, mismatched):
        channel = channels.channel_of(intent)
        if decision is PspOutcome.SUCCEEDED:
            chains.append((intent, channel.settle(intent)))
            paid_out.add(intent.id)
        elif decision is PspOutcome.DECLINED:
            to_void.append((intent, ErrorCode.PSP_DECLINED, "the payment service provider declined it"))
        else:
            assert decision is PspOutcome.EXPIRED, decision
            to_void.append((intent, ErrorCode.EXPIRED, "no outcome from the payment service provider in time"))
    transitions: list[Transition] = []
    for outcome in await run_chains(context, chains):
        if outcome.in_ledger:
            transitions.append(advance(outcome.intent, State.SETTLED))
        elif outcome.cause in FAIL_ONLY:
            transitions.append(fail(outcome.intent, *FAIL_ONLY[outcome.cause]))
        elif outcome.cause in VOID_AND_FAIL:
            to_void.append((outcome.intent, *VOID_AND_FAIL[outcome.cause]))
        else:
            statuses = [s.name for s in outcome.statuses]
            raise LedgerAnswerError(f"settlement of intent {outcome.intent.id}: ledger answered {statuses}")
    if to_void:
        transitions.extend(await release(context, to_void))
    if mismatched:  # rare: a PSP's bug, or its books and ours disagree
        await reviews.flag_each(context.pool, mismatched)
    failed_after_payout = [t.intent_id for t in transitions if t.new == State.FAILED and t.intent_id in paid_out]
    if failed_after_payout:
        await reviews.flag(context.pool, failed_after_payout, "the PSP paid out, but the hold could not be posted")
    # Watched until the PSP answers finally (consumers/psp_watch.py): a late success is flagged, not lost.
    await psp_watch.watch(
        context.pool, [t.intent_id for t in transitions if t.new == State.FAILED and t.intent_id in deadline]
    )
    return transitions


async def _psp_decisions(
    context: StageContext, intents: list[Intent], deadline: set[object], mismatched: dict[object, str]
) -> list[tuple[Intent, PspOutcome]]:
    """What to do with PSP-channel intents: SUCCEEDED, DECLINED, EXPIRED, or nothing yet (left out).

    An entry carrying a signature-checked callback's status (`psp_status`) is decided by it. Any other
    (just authorized, or re-driven by the poller because it waits too long) asks the PSP for the status,
    all at once, at most once per intent per `psp_status_query_interval_s` however many entries name it
    (an intent asked recently waits for a later entry). Settlement never submits: that is the connector's
    alone (consumers/psp_connector.py), before its submit deadline. Past the outcome deadline (from the
    hold's own timestamp) without an outcome, PM voids the hold itself (before the ledger's timeout
    would) and adds the intent's id to `deadline`. A status answer naming another payment than ours
    (amount, currency) decides nothing, as no answer, and its reason goes into `mismatched`."""
    if not intents:
        return []
    assert context.psp is not None
    psp = context.psp
    holds = await look_up_holds(context, intents)
    asked = await _may_ask(context, [intent for intent in intents if intent.psp_status is None])
    answers = await asyncio.gather(
        *(channels.channel_of(intent).status(intent, psp) for intent in asked), return_exceptions=True
    )
    status_of: dict[object, str | None] = {intent.id: intent.psp_status for intent in intents}
    for intent, answer in zip(asked, answers, strict=True):
        if isinstance(answer, PspReportMismatch):
            log.error("the PSP reports another payment; flagged", extra={"intent_id": str(intent.id)})
            mismatched[intent.id], answer = str(answer), None
        elif isinstance(answer, BaseException):
            if not isinstance(answer, PspUnavailable):
                raise answer
            log.warning("PSP unavailable; the poller brings the intent back", extra={"intent_id": str(intent.id)})
            answer = None
        status_of[intent.id] = answer
    asked_ids = {intent.id for intent in asked}
    now_s = context.clock()
    decisions = []
    for intent in intents:
        if intent.psp_status is None and intent.id not in asked_ids:
            continue  # asked a moment ago: the answer then decided, or a later entry will
        hold = holds.get(intent.id)
        if hold is None:
            raise LedgerAnswerError(f"intent {intent.id} is AUTHORIZED but has no hold in the ledger")
        channel = channels.channel_of(intent)
        assert isinstance(channel, PspChannel), intent.channel
        decision = channel.outcome(status_of[intent.id])
        if decision is None and intent.psp_status is None and channel.past_deadline(hold, now_s):
            decision = PspOutcome.EXPIRED  # our decision: no outcome by the channel's deadline
            deadline.add(intent.id)
        if decision is not None:
            decisions.append((intent, decision))
    return decisions


async def _may_ask(context: StageContext, intents: list[Intent]) -> list[Intent]:
    """The intents whose PSP may be asked now: each takes a slot (SET NX PX, one pipeline) that lasts the
    query interval, so duplicates, re-drives and callbacks cannot make PM hammer a PSP."""
    if not intents:
        return []
    interval_ms = max(1, int(context.psp_status_query_interval_s * 1000))
    async with context.redis.pipeline(transaction=False) as pipe:
        for intent in intents:
            pipe.set(f"{PSP_STATUS_QUERY_KEY_PREFIX}{intent.id}", b"1", nx=True, px=interval_ms)
        taken = await pipe.execute()
    return [intent for intent, slot in zip(intents, taken, strict=True) if slot]
