"""What each user sees of a final intent in the app's history (`GET /api/pm/history`). No I/O: the history
stage writes the rows, with INSERT_SQL inside its batch's one write statement (consumers/history.py).

One row per wallet user and intent: a settled transfer shows as a debit for the sender (amount plus PRE
fee) and a credit for the recipient (amount minus POST fee). An intent that ended without moving money
shows only to the user who asked for it, with amount 0 and the error code: the sender, or the user
topping up; a merchant's credit or an operator's adjustment that failed is not the user's news. A
mini-app row names its merchant.
"""

from __future__ import annotations

from dataclasses import dataclass

from pm.domain.intent import TERMINAL_STATES, Intent, OperationType, State

# Operations a user asks for to be credited (X-User-Id is the recipient).
_ASKED_BY_RECIPIENT = frozenset({OperationType.QP_TOPUP})


@dataclass(frozen=True, slots=True)
class HistoryRow:
    user_id: int
    intent: Intent
    direction: str  # DEBIT | CREDIT, from this user's side
    counterparty_id: int | None
    amount_minor: int
    fee_minor: int


def history_rows(intent: Intent) -> list[HistoryRow]:
    assert intent.state in TERMINAL_STATES, intent.state
    if intent.state != State.SETTLED:
        if intent.sender_id is not None:
            return [HistoryRow(intent.sender_id, intent, "DEBIT", intent.recipient_id, 0, 0)]
        if intent.operation_type in _ASKED_BY_RECIPIENT:
            assert intent.recipient_id is not None
            return [HistoryRow(intent.recipient_id, intent, "CREDIT", None, 0, 0)]
        return []
    rows = []
    if intent.sender_id is not None:
        debit_minor = intent.amount_minor + intent.fee_pre_minor
        rows.append(
            HistoryRow(intent.sender_id, intent, "DEBIT", intent.recipient_id, debit_minor, intent.fee_pre_minor)
        )
    if intent.recipient_id is not None:
        credit_minor = intent.amount_minor - intent.fee_post_minor
        assert credit_minor >= 0, "a POST fee never exceeds the amount (fees stage)"
        rows.append(
            HistoryRow(intent.recipient_id, intent, "CREDIT", intent.sender_id, credit_minor, intent.fee_post_minor)
        )
    return rows


# A replay writes nothing twice: (user_id, intent_id) is the key (pm.history's primary key). Parameters
# $1..$13 are `write_arguments`; the history stage runs this as part of its own statement (consumers/history.py).
INSERT_SQL = """
INSERT INTO pm.history (user_id, intent_id, direction, counterparty_id, operation_type, amount_minor,
                        fee_minor, currency, state, error_code, created_at, finished_at, merchant_id)
SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                     $7::bigint[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
                     $13::bigint[])
ON CONFLICT (user_id, intent_id) DO NOTHING
"""
ARGUMENT_COUNT = 13


def write_arguments(intents: list[Intent]) -> tuple[list[list[object]], int]:
    """The $1..$13 arrays of INSERT_SQL for these final intents' rows, and how many rows they hold."""
    rows = [row for intent in intents for row in history_rows(intent)]
    arguments = [
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
        [r.intent.merchant_id for r in rows],
    ]
    assert len(arguments) == ARGUMENT_COUNT
    return arguments, len(rows)
