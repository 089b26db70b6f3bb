"""Mini-app charges that waited too long for their user: the status poller ends them, each round.

A MINIAPP_CHARGE that no allowance covered waits in AWAITING_CONFIRMATION (consumers/validation.py),
nothing held, until its user confirms it (POST /intents/{id}/confirm, gateway/consent.py). Past
PM_MINIAPP_CONFIRMATION_TIMEOUT_S without a confirmation, it ends REJECTED CONFIRMATION_EXPIRED: one
compare-and-set for the round (a confirmation that came first wins; this one then changes nothing), and
the final state reaches the merchant's webhook, the app's status message and the history stage like
any other (its transition statement writes the outbox row; the outbox feed does the rest).
"""

from __future__ import annotations

import logging

from consumers.context import StageContext
from pm.config.constants import CONFIRMATION_EXPIRY_ROUND_MAX
from pm.domain.intent import ErrorCode, State, Transition
from pm.store.intents import apply_transitions

log = logging.getLogger("pm.poller")

_OVERDUE_SQL = """
SELECT id FROM pm.intent
WHERE operation_type = 'MINIAPP_CHARGE' AND NOT finished  -- its index (sql/0020): no state in it
  AND state = 'AWAITING_CONFIRMATION' AND updated_at < clock_timestamp() - make_interval(secs => $1)
ORDER BY created_at
LIMIT $2
"""


async def expire_once(context: StageContext, round_max: int = CONFIRMATION_EXPIRY_ROUND_MAX) -> int:
    """Reject the overdue waiting charges (oldest first, at most `round_max`); how many it ended."""
    timeout_s = context.miniapp_confirmation_timeout_s
    rows = await context.pool.fetch(_OVERDUE_SQL, float(timeout_s), round_max)
    message = f"the user did not confirm the charge within {timeout_s} s"
    code = ErrorCode.CONFIRMATION_EXPIRED
    transitions = [
        Transition(row["id"], State.AWAITING_CONFIRMATION, State.REJECTED, error_code=code, error_message=message)
        for row in rows
    ]
    results = await apply_transitions(context.pool, transitions)
    expired = [result.intent for result in results if result.applied]
    for intent in expired:
        log.info("confirmation expired", extra={"intent_id": str(intent.id), "state": str(intent.state)})
    return len(expired)
