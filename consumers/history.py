"""History (SETTLED | REJECTED | FAILED): write what each party sees in the app's history.

One row per user and intent: a settled transfer shows as a debit for the sender (amount plus PRE fee)
and a credit for the recipient (amount minus POST fee); an intent that ended without moving money
shows only to its sender, with amount 0 and the error code. One SQL statement per batch writes the
rows (a replay writes nothing twice) and marks the intents done, so the status poller stops re-driving
them. The limits places of the batch's REJECTED and FAILED intents are given back first (one Redis round
trip, consumers/limits.py). No state changes here: the status messages were published by the stage that
ended the intent.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.context import StageContext
from consumers.limits import release_refused
from pm.domain import TERMINAL_STATES, Intent, State, Transition


@dataclass(frozen=True, slots=True)
class HistoryRow:
    user_id: int
    intent: Intent
    direction: str
    counterparty_id: int | None
    amount_minor: int
    fee_minor: int


def history_rows(intent: Intent) -> list[HistoryRow]:
    assert intent.state in TERMINAL_STATES, intent.state
    if intent.state != State.SETTLED:
        if intent.sender_id is None:
            return []
        return [HistoryRow(intent.sender_id, intent, "DEBIT", intent.recipient_id, 0, 0)]
    rows = []
    if intent.sender_id is not None:
        rows.append(
            HistoryRow(
                intent.sender_id,
                intent,
                "DEBIT",
                intent.recipient_id,
                intent.amount_minor + intent.fee_pre_minor,
                intent.fee_pre_minor,
            )
        )
    if intent.recipient_id is not None:
        rows.append(
            HistoryRow(
                intent.recipient_id,
                intent,
                "CREDIT",
                intent.sender_id,
                intent.amount_minor - intent.fee_post_minor,
                intent.fee_post_minor,
            )
        )
    return rows


_WRITE_SQL = """
WITH rows AS (
    INSERT INTO pm.history (user_id, intent_id, direction, counterparty_id, operation_type, amount_minor,
                            fee_minor, currency, state, error_code, created_at, finished_at)
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                         $7::bigint[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])
    ON CONFLICT (user_id, intent_id) DO NOTHING
)
UPDATE pm.intent SET history_written = true WHERE id = ANY($13::uuid[]) AND NOT history_written
"""


async def handle(intents: list[Intent], context: StageContext) -> list[Transition]:
    finished = [intent for intent in intents if intent.state in TERMINAL_STATES]
    # Before the rows are marked written: should Redis fail, the poller re-drives the intents too.
    await release_refused(finished, context)
    rows = [row for intent in finished for row in history_rows(intent)]
    await context.pool.execute(
        _WRITE_SQL,
        [r.user_id for r in rows],
        [r.intent.id for r in rows],
        [r.direction for r in rows],
        [r.counterparty_id for r in rows],
        [str(r.intent.operation_type) for r in rows],
        [r.amount_minor for r in rows],
        [r.fee_minor for r in rows],
        [r.intent.currency for r in rows],
        [str(r.intent.state) for r in rows],
        [r.intent.error_code for r in rows],
        [r.intent.created_at for r in rows],
        [r.intent.updated_at for r in rows],
        [intent.id for intent in finished],
    )
    return []
