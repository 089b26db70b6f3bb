"""Watching payments PM voided at its deadline, until their PSP answers finally (sql/0010).

Settlement voids an AUTHORIZED payment that has no outcome by the channel's deadline (FAILED EXPIRED),
before the ledger's own timeout would. The PSP may still pay afterwards, and its callback may never
arrive (lost, or signed wrongly: the gateway then trusts nothing). So settlement also puts the intent
on a watch, and the status poller asks the PSP about every due one, at once, each round:

- the PSP reports it paid  -> flagged for review (pm/store/reviews.py), never settled; the watch ends;
- the PSP reports it final otherwise (declined, expired), or does not know it -> the watch ends;
- no answer or still pending -> asked again later (doubling, 30 s up to an hour);
- `WATCH_WINDOW_S` (24 h) without a final answer -> flagged for review, so no payment is left unknown;
- the PSP reports another payment under our reference (amount, currency) -> flagged; the watch ends.

    await watch(conn, intent_ids)              # settlement, for its EXPIRED voids; idempotent
    checked = await check_due(pool, psp)       # the status poller, every round

The table and its SQL are pm/store/psp_watch.py's; this module decides what each PSP answer means.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

import channels
from pm.domain.intent import State
from pm.domain.psp import PspOutcome, PspReportMismatch
from pm.psp.client import PspClient, PspUnavailable
from pm.store import psp_watch as watches
from pm.store import reviews
from pm.store.psp_watch import WATCH_WINDOW_S
from pm.store.psp_watch import watch as watch  # what the stages call

log = logging.getLogger("pm.psp_watch")


async def check_due(pool: asyncpg.Pool, psp: PspClient) -> int:
    """Ask the PSP about every due watch, at once; flag what it paid; the number checked."""
    due = await watches.take_due(pool)
    if not due:
        return 0
    answers = await asyncio.gather(
        *(channels.channel_of(intent).status(intent, psp) for _, intent in due), return_exceptions=True
    )
    paid, unresolved, ended = [], [], []
    mismatched: dict[object, str] = {}
    for (window_over, intent), answer in zip(due, answers, strict=True):
        if isinstance(answer, PspReportMismatch):  # another payment under our reference: an operator looks
            mismatched[intent.id] = str(answer)
            continue
        if isinstance(answer, BaseException) and not isinstance(answer, PspUnavailable):
            raise answer
        decision = None if isinstance(answer, BaseException) else channels.channel_of(intent).outcome(answer)
        if intent.state != State.FAILED:  # settled after all (a racing success won): nothing to watch
            ended.append(intent.id)
        elif answer is None:  # the PSP never got it (the void came first): it cannot pay it
            ended.append(intent.id)
        elif decision is PspOutcome.SUCCEEDED:
            paid.append(intent.id)
        elif decision is not None:  # final at the PSP without paying
            ended.append(intent.id)
        elif window_over:
            unresolved.append(intent.id)
    if paid:
        await reviews.flag(pool, paid, "the PSP reports it paid after PM voided it at the deadline")
    if unresolved:
        await reviews.flag(pool, unresolved, f"no final answer from the PSP {WATCH_WINDOW_S // 3600} h after the void")
    if mismatched:
        await reviews.flag_each(pool, mismatched)
    await watches.end(pool, [*paid, *unresolved, *ended, *mismatched])
    for intent_id in paid:
        log.error("PSP paid a voided payment; flagged for review", extra={"intent_id": str(intent_id)})
    return len(due)
