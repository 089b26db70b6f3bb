"""History (SETTLED | REJECTED | FAILED): the end of an intent, after its final state.

Fed by the outbox worker alone (consumers/outbox_feed.py adds a final intent to this stage's stream in the
Redis call that publishes its final status message), and by the status poller, which re-drives a final
intent not yet `finished` (a lost entry; a Redis that lost its data). Per batch:

1. give back the places the REJECTED and FAILED intents took in the limit counters: one Redis call,
   idempotent per intent (pm/redis/limit_counters.py marks each release), and the mini-app allowance
   their charges reserved: one statement, each reservation once (pm/store/allowances.py `released_at`);
2. one statement writes every user's history row of the batch (pm/domain/history.py; ON CONFLICT DO
   NOTHING on the table's key (user_id, intent_id)), sets `finished`, which takes the intents off the
   status poller's work list; a second, in the same transaction, gives the amount of each REFUND that
   ended REJECTED or FAILED back to its original (`refunded_minor`, sql/0019), once.

No state changes here (the handler returns no transitions): the runner acknowledges the batch after
step 2 committed. A crash before that leaves the entries pending; they are claimed and handled again,
and both steps are idempotent, so an intent's history rows exist once and its places are given back once.
Giving back comes first: should Redis fail between the two, the intent is not `finished` and comes back.
"""

from __future__ import annotations

from consumers.context import StageContext
from pm.config import metrics
from pm.domain import history
from pm.domain.intent import TERMINAL_STATES, Intent, OperationType, State, Transition
from pm.redis import limit_counters
from pm.store import allowances


class NotFinalError(ValueError):
    """An entry on the history stream names an intent that is not final: a bug upstream (only the outbox
    feed, the poller and `pm dlq replay` write this stream, all from final rows). It is retried, then
    dead-lettered like any failing entry."""


_N = history.ARGUMENT_COUNT
# The rows written (a replayed one conflicts and is not), for the metric, and what the REFUNDs that ended
# without moving money give back to their originals (sql/0019): only those this statement marks finished
# (`AND NOT finished`: a concurrent or replayed batch waits on the row lock, then finds them finished), so
# each is given back exactly once. The give-back is a second statement in the same transaction: in one
# statement, an original in the same batch as its refused refund would be updated twice, and PostgreSQL
# keeps only one of two updates of a row in one statement (the reservation would stay taken for good).
_WRITE_SQL = f"""
WITH history AS ({history.INSERT_SQL} RETURNING 1), finished AS (
    UPDATE pm.intent SET finished = true WHERE id = ANY(${_N + 1}::uuid[]) AND NOT finished
    RETURNING refund_of, amount_minor, state
), refused AS (
    SELECT refund_of, sum(amount_minor)::bigint AS amount_minor FROM finished
    WHERE refund_of IS NOT NULL AND state IN ('REJECTED', 'FAILED') GROUP BY refund_of
)
SELECT (SELECT count(*) FROM history) AS written,
       ARRAY(SELECT refund_of FROM refused ORDER BY refund_of) AS originals,
       ARRAY(SELECT amount_minor FROM refused ORDER BY refund_of) AS amounts_minor
"""
_GIVE_BACK_SQL = """
UPDATE pm.intent original SET refunded_minor = original.refunded_minor - refused.amount_minor
FROM unnest($1::uuid[], $2::bigint[]) AS refused(id, amount_minor)
WHERE original.id = refused.id
"""


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    open_ = [intent for intent in intents if intent.state not in TERMINAL_STATES]
    if open_:
        names = ", ".join(f"{intent.id} ({intent.state})" for intent in open_[:5])
        raise NotFinalError(f"the history stage takes only final intents, not {names}")
    rules = await context.rules.current(context.pool)
    await limit_counters.release_refused(context.redis, rules.limit_rules, intents, context.limits_durability)
    unpaid_charges = [
        intent.id
        for intent in intents
        if intent.operation_type == OperationType.MINIAPP_CHARGE and intent.state in (State.REJECTED, State.FAILED)
    ]
    await allowances.release(context.pool, sorted(unpaid_charges))
    # In intent id order: two history consumers writing overlapping batches (a duplicate from the feed and
    # one from a re-drive, in other orders) then lock the rows in one order and never deadlock.
    ordered = sorted(intents, key=lambda intent: intent.id)
    arguments, _ = history.write_arguments(ordered)
    async with context.pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(_WRITE_SQL, *arguments, [intent.id for intent in ordered])
        if row["originals"]:
            await connection.execute(_GIVE_BACK_SQL, row["originals"], row["amounts_minor"])
    metrics.HISTORY_ROWS.inc(row["written"])
    return []
