"""The PSP connectors (CLEARED -> AUTHORIZED | FAILED): the one place a payment is submitted to its PSP.

Dispatch holds the money and puts a job per CLEARED intent of a PSP channel on its connector's stream
(streams.yaml `connector_for`: `ipps-connector` for payouts, `qp-connector` for top-ups). Per batch:
1. the holds, from one ledger lookup (consumers/holds.py): every deadline counts from a hold's timestamp;
2. a hold that is no longer live (expired, voided) is voided for certain and the intent FAILED `EXPIRED`,
   and the payment is watched at its PSP (consumers/psp_watch.py): an earlier submit whose answer was lost may
   still be paid, and that must reach an operator;
3. a live hold before its submit deadline is submitted, all at once, idempotent by our reference (the
   intent id): AUTHORIZED once the PSP has it. A PSP that does not answer leaves the intent CLEARED: the
   poller re-drives it through dispatch, which confirms the hold and puts the job here again;
4. a live hold past its submit deadline is never submitted: AUTHORIZED as it is, so that settlement asks
   the PSP (an earlier submit may have reached it) and voids at the outcome deadline;
5. a submit the PSP refuses because another payment has our reference (409) never reached it: the hold is
   voided at once and the intent FAILED `PSP_DECLINED`, flagged for an operator and watched at its PSP.
   Whatever the PSP reports under our reference is that other payment's, so nothing may settle on it
   (the same amount and currency to another destination would pass every check of a report).
"""

from __future__ import annotations

import asyncio
import logging

import channels
from channels.base import PspChannel
from consumers import psp_watch
from consumers.context import StageContext
from consumers.holds import look_up_holds, release
from pm.domain.intent import ErrorCode, Intent, State, Transition, advance
from pm.psp.client import REFERENCE_REUSED, PspUnavailable
from pm.store import reviews

log = logging.getLogger("pm.consumers.psp_connector")
REUSED_REASON = "the PSP refused the submit: another payment has our reference"


class MissingHoldError(RuntimeError):
    """A connector job for an intent with no hold in the ledger: dispatch always holds first (a bug)."""


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    waiting = [intent for intent in intents if intent.state == State.CLEARED]
    assert context.psp is not None, "a stage context always has a PSP client"
    psp = context.psp
    holds = await look_up_holds(context, waiting)
    now_s = context.clock()
    transitions: list[Transition] = []
    to_submit, released = [], []
    for intent in waiting:
        channel = channels.channel_of(intent)
        assert isinstance(channel, PspChannel), intent.channel
        hold = holds.get(intent.id)
        if hold is None:
            raise MissingHoldError(f"intent {intent.id} reached its PSP connector without a hold")
        if hold.posted:
            continue  # a stale job: the intent went on long ago
        if not hold.live(now_s):
            released.append((intent, ErrorCode.EXPIRED, "the hold ended before the payment reached the PSP"))
        elif channel.may_submit(hold, now_s):
            to_submit.append((intent, channel, hold))
        else:
            log.warning("past the submit deadline: not submitted", extra={"intent_id": str(intent.id)})
            transitions.append(advance(intent, State.AUTHORIZED))
    answers = await asyncio.gather(
        *(channel.submit_one(intent, hold, psp, now_s) for intent, channel, hold in to_submit), return_exceptions=True
    )
    reused = []
    for (intent, _, _), answer in zip(to_submit, answers, strict=True):
        if isinstance(answer, PspUnavailable) and answer.reason == REFERENCE_REUSED:
            log.error("the PSP has another payment under our reference", extra={"intent_id": str(intent.id)})
            reused.append(intent)
        elif isinstance(answer, PspUnavailable):
            log.warning(
                "PSP unavailable; the poller re-drives the intent",
                extra={"intent_id": str(intent.id), "reason": answer.reason},
            )
        elif isinstance(answer, BaseException):
            raise answer
        else:
            transitions.append(advance(intent, State.AUTHORIZED))
    if reused:
        # The PSP has another payment under our reference (409): ours never reached it, and whatever it
        # reports under the reference is that one's. Void now; an operator looks, and the watch hears of
        # it should the PSP pay under our reference anyway.
        await reviews.flag(context.pool, [i.id for i in reused], REUSED_REASON)
        released.extend((intent, ErrorCode.PSP_DECLINED, REUSED_REASON) for intent in reused)
    if released:
        failed = await release(context, released)
        transitions.extend(failed)
        await psp_watch.watch(context.pool, [t.intent_id for t in failed])
    return transitions
