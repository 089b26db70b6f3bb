"""Every stage transition of an intent is a HOT update on real PostgreSQL (sql/0005, sql/0020): it
changes no column an index of pm.intent reads (as a key or in its WHERE), so PostgreSQL writes a new row
version on the same page and no index entry. An index on `updated_at` or one whose WHERE reads `state`
turns each of an intent's transitions into a new entry in every index of the table, on the hottest
table of the pipeline. Counted by PostgreSQL itself, within the transaction that runs them."""

from __future__ import annotations

import itertools
import uuid

import pytest

from pm.domain.intent import ErrorCode, OperationType, State, Transition
from pm.store import intents as store

_users = itertools.count(810_001)

P2P_STEPS = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED, State.SETTLED]
# A mini-app charge that waits for its user, who confirms it; and one that the poller expires.
WAITING_STEPS = [State.CREATED, State.AWAITING_CONFIRMATION, State.VALIDATED, State.PRICED, State.CLEARED]
EXPIRED_STEPS = [State.CREATED, State.AWAITING_CONFIRMATION, State.REJECTED]


async def _new_intent(pool, operation_type: OperationType) -> uuid.UUID:
    sender = next(_users)
    miniapp = operation_type == OperationType.MINIAPP_CHARGE
    (outcome,) = await store.create_intents(
        pool,
        [
            store.NewIntent(
                api_key_id="hot-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=operation_type, amount_minor=1_500, currency="THB", sender_id=sender,
                recipient_id=None if miniapp else sender + 1, operator_id=None,
                merchant_id=900_001 if miniapp else None,
            )
        ],
    )  # fmt: skip
    assert outcome.created is not None
    return outcome.created.id


async def _updates_in_transaction(pool, intent_id: uuid.UUID, steps: list[State], channel: str) -> tuple[int, int]:
    """Run the transitions in one transaction; (row updates, HOT ones) of pm.intent in it."""
    async with pool.acquire() as conn, conn.transaction():
        for expected, new in itertools.pairwise(steps):
            fees = {"fee_pre_minor": 0, "fee_post_minor": 0, "fee_rules": ()} if new == State.PRICED else {}
            transition = Transition(
                intent_id, expected, new, channel=channel if new == State.VALIDATED else None,
                error_code=ErrorCode.CONFIRMATION_EXPIRED if new == State.REJECTED else None, **fees,
            )  # fmt: skip
            (result,) = await store.apply_transitions(conn, [transition])
            assert result.applied and result.intent.state == new
        row = await conn.fetchrow(
            "SELECT pg_stat_get_xact_tuples_updated('pm.intent'::regclass) AS updated,"
            " pg_stat_get_xact_tuples_hot_updated('pm.intent'::regclass) AS hot"
        )
    return row["updated"], row["hot"]


@pytest.mark.parametrize(
    ("operation_type", "steps"),
    [
        (OperationType.P2P_TRANSFER, P2P_STEPS),
        (OperationType.MINIAPP_CHARGE, WAITING_STEPS),
        (OperationType.MINIAPP_CHARGE, EXPIRED_STEPS),
    ],
    ids=["p2p", "confirmed-charge", "expired-charge"],
)
async def test_every_transition_is_a_hot_update(pool, operation_type, steps) -> None:
    intent_id = await _new_intent(pool, operation_type)
    channel = "MINIAPP" if operation_type == OperationType.MINIAPP_CHARGE else "P2P"
    updated, hot = await _updates_in_transaction(pool, intent_id, steps, channel)
    assert updated == len(steps) - 1
    assert hot == updated, f"{updated - hot} of {updated} transitions rewrote pm.intent's index entries"
