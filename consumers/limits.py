"""Limits (PRICED -> CLEARED | REJECTED): daily and monthly caps per user (pm/domain/limits.py).

Per batch: the enabled rules (cached, at most a second old), the counters each intent takes a place in,
then one Redis script call that reserves for the whole batch, all or nothing per intent and idempotent
per intent id (pm/redis/limit_counters.py). An intent over a cap is REJECTED `LIMIT_EXCEEDED`, saying which
limit and what remains. The places are given back when the intent ends REJECTED or FAILED: the history
stage calls `limit_counters.release_refused` as it ends the intent (consumers/history.py).
"""

from __future__ import annotations

import functools

from consumers.context import StageContext
from pm.domain.intent import ErrorCode, Intent, State, Transition, advance, reject
from pm.domain.limits import counters_for, exceeded_message
from pm.redis import limit_counters
from pm.redis.limit_counters import Reservation, ReservationStatus
from pm.store import limit_members


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    rules = await context.rules.current(context.pool)
    plans = [(intent, counters_for(intent, rules.limit_rules)) for intent in intents]
    limited = [(intent, counters) for intent, counters in plans if counters]
    rebuild = functools.partial(limit_members.rebuild_members, context.pool)
    durability = context.limits_durability
    reservations = await limit_counters.reserve(context.redis, rebuild, limited, durability) if limited else {}
    return [_decide(intent, reservations.get(intent.id)) for intent in intents]


def _decide(intent: Intent, reservation: Reservation | None) -> Transition:
    if reservation is None or reservation.admitted:
        return advance(intent, State.CLEARED)
    if reservation.status == ReservationStatus.RELEASED:
        # Only a final intent is released: this is a late redelivery, and the compare-and-set will find
        # the intent final and change nothing.
        return reject(intent, ErrorCode.LIMIT_EXCEEDED, "the intent's limit reservation was already released")
    assert reservation.status == ReservationStatus.EXCEEDED and reservation.exceeded is not None
    message = exceeded_message(reservation.exceeded, reservation.remaining_amount_minor, reservation.remaining_count)
    return reject(intent, ErrorCode.LIMIT_EXCEEDED, message)
