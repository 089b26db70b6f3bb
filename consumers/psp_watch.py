"""Watching payments PM voided at its deadline, until their PSP answers finally (sql/0010).

Settlement voids an AUTHORIZED payment that has no outcome by the channel's deadline (FAILED EXPIRED),
before the ledger's own timeout would. The PSP may still pay afterwards, and its callback may never
arrive (lost, or signed wrongly: the gateway then trusts nothing). So settlement also puts the intent
on a watch, and the status poller asks the PSP about every due one, at once, each round:

- the PSP reports it paid  -> flagged for review (pm/store/reviews.py), never settled; the watch ends;
- the PSP reports it final otherwise (declined, expired), or does not know it -> the watch ends;
- no answer or still pending -> asked again later (doubling, 30 s up to an hour);
- `WATCH_WINDOW_S` (24 h) without a final answer -> flagged for review, so no payment is left unknown.

    await watch(conn, intent_ids)              # settlement, for its EXPIRED voids; idempotent
    checked = await check_due(pool, psp)       # the status poller, every round
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

import channels
from pm.domain.intent import State
from pm.psp.client import PspClient, PspUnavailable
from pm.store import reviews
from pm.store.intents import INTENT_COLUMNS, intent_from_row

log = logging.getLogger("pm.psp_watch")

WATCH_WINDOW_S = 24 * 3_600
FIRST_CHECK_S = 30
CHECK_BACKOFF_MAX_S = 3_600
CHECK_BATCH_MAX = 100

_WATCH_SQL = """
INSERT INTO pm.psp_watch (intent_id, watch_until, next_check_at)
SELECT id, now() + make_interval(secs => $2), now() + make_interval(secs => $3) FROM unnest($1::uuid[]) AS u(id)
ON CONFLICT (intent_id) DO NOTHING
"""
# Takes the due watches and schedules their next check at once, so a crash mid-round only delays them.
_TAKE_SQL = f"""
WITH due AS (
    UPDATE pm.psp_watch w SET checks = w.checks + 1,
        next_check_at = now() + make_interval(secs => least($2 * power(2, w.checks), $3))
    WHERE w.intent_id IN (
        SELECT intent_id FROM pm.psp_watch WHERE next_check_at <= now() ORDER BY next_check_at LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING w.intent_id, w.watch_until <= now() AS window_over
)
SELECT due.window_over, {", ".join("i." + c for c in INTENT_COLUMNS.split(", "))}
FROM due JOIN pm.intent i ON i.id = due.intent_id
"""
_END_SQL = "DELETE FROM pm.psp_watch WHERE intent_id = ANY($1::uuid[])"


async def watch(conn: asyncpg.Connection | asyncpg.Pool, intent_ids: list[uuid.UUID]) -> None:
    if intent_ids:
        await conn.execute(_WATCH_SQL, intent_ids, float(WATCH_WINDOW_S), float(FIRST_CHECK_S))


async def check_due(pool: asyncpg.Pool, psp: PspClient) -> int:
    """Ask the PSP about every due watch, at once; flag what it paid; the number checked."""
    rows = await pool.fetch(_TAKE_SQL, CHECK_BATCH_MAX, float(FIRST_CHECK_S), float(CHECK_BACKOFF_MAX_S))
    if not rows:
        return 0
    intents = [intent_from_row(row) for row in rows]
    answers = await asyncio.gather(
        *(channels.channel_of(intent).status(intent, psp) for intent in intents), return_exceptions=True
    )
    paid, unresolved, ended = [], [], []
    for row, intent, answer in zip(rows, intents, answers, strict=True):
        if isinstance(answer, BaseException) and not isinstance(answer, PspUnavailable):
            raise answer
        decision = None if isinstance(answer, BaseException) else channels.channel_of(intent).outcome(answer)
        if intent.state != State.FAILED:  # settled after all (a racing success won): nothing to watch
            ended.append(intent.id)
        elif answer is None:  # the PSP never got it (the void came first): it cannot pay it
            ended.append(intent.id)
        elif decision == "SUCCEEDED":
            paid.append(intent.id)
        elif decision is not None:  # final at the PSP without paying
            ended.append(intent.id)
        elif row["window_over"]:
            unresolved.append(intent.id)
    if paid:
        await reviews.flag(pool, paid, "the PSP reports it paid after PM voided it at the deadline")
    if unresolved:
        await reviews.flag(pool, unresolved, f"no final answer from the PSP {WATCH_WINDOW_S // 3600} h after the void")
    if paid or unresolved or ended:
        await pool.execute(_END_SQL, [*paid, *unresolved, *ended])
    for intent_id in paid:
        log.error("PSP paid a voided payment; flagged for review", extra={"intent_id": str(intent_id)})
    return len(rows)
