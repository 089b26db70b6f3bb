"""A stage's transitions are sent back by version only (pm.store.intents.apply_transitions with `read`):
the intent after each is built from the entry's intent and the transition. On real PostgreSQL, that
intent must be the row, column for column, as a load of it gives; a read that is out of date must
give the row as it is, and a row that did not move must be reported as not applied."""

from __future__ import annotations

import itertools
import uuid

import orjson

from pm.domain.intent import ErrorCode, Intent, OperationType, State, Transition
from pm.store import intents as store

_users = itertools.count(820_001)

FEE_RULES = ({"version": 3, "id": "fee-p2p", "kind": "PRE", "fee_minor": 25},)  # not jsonb's key order


async def _new_intent(pool, operation_type: OperationType = OperationType.P2P_TRANSFER) -> Intent:
    sender = next(_users)
    miniapp = operation_type == OperationType.MINIAPP_CHARGE
    (outcome,) = await store.create_intents(
        pool,
        [
            store.NewIntent(
                api_key_id="after-read-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=operation_type, amount_minor=1_500, currency="THB", sender_id=sender,
                recipient_id=None if miniapp else sender + 1, operator_id=None, tags=("kyc_verified",),
                merchant_id=900_002 if miniapp else None,
            )
        ],
    )  # fmt: skip
    assert outcome.created is not None
    return outcome.created


def _as_an_entry_carries_it(intent: Intent) -> Intent:
    """Through a stream entry and back, as the next stage reads it."""
    return Intent.from_message(orjson.loads(orjson.dumps(intent.to_message())))


def _step(intent: Intent, new: State) -> Transition:
    if new == State.VALIDATED:
        return Transition(intent.id, intent.state, new, channel="INTERNAL_P2P")
    if new == State.PRICED:
        return Transition(intent.id, intent.state, new, fee_pre_minor=25, fee_post_minor=0, fee_rules=FEE_RULES)
    if new == State.REJECTED:
        return Transition(intent.id, intent.state, new, error_code=ErrorCode.LIMIT_EXCEEDED, error_message="daily")
    return Transition(intent.id, intent.state, new)


async def test_each_intent_built_after_a_transition_is_its_row(pool) -> None:
    paths = [
        [State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED, State.SETTLED],
        [State.VALIDATED, State.PRICED, State.REJECTED],
    ]
    intents = [await _new_intent(pool) for _ in paths]
    for step in range(max(len(path) for path in paths)):
        moving = [(intent, path[step]) for intent, path in zip(intents, paths, strict=True) if step < len(path)]
        read = {intent.id: _as_an_entry_carries_it(intent) for intent, _ in moving}
        results = await store.apply_transitions(pool, [_step(read[i.id], new) for i, new in moving], read)
        assert all(result.applied for result in results)
        loaded = {intent.id: intent for intent in await store.load_intents(pool, list(read))}
        for result in results:
            assert result.intent == loaded[result.intent.id]  # every field, fee_rules and error included
        intents = [next((r.intent for r in results if r.intent.id == i.id), i) for i in intents]
    assert [intent.state for intent in intents] == [State.SETTLED, State.REJECTED]
    assert intents[1].error_code == "LIMIT_EXCEEDED" and intents[0].fee_rules == FEE_RULES


async def test_a_read_out_of_date_gives_the_row_as_it_is(pool) -> None:
    intent = await _new_intent(pool)
    # The row moved on after this read without leaving its state (what no stage does: the read must
    # not be trusted then).
    await pool.execute("UPDATE pm.intent SET version = version + 1, channel = 'QP' WHERE id = $1", intent.id)
    (result,) = await store.apply_transitions(
        pool, [Transition(intent.id, State.CREATED, State.VALIDATED)], {intent.id: intent}
    )
    assert result.applied
    assert result.intent == await store.load_intent(pool, intent.id)
    assert (result.intent.version, result.intent.channel) == (3, "QP")


async def test_a_row_that_did_not_move_is_reported_as_it_is(pool) -> None:
    moved, other = await _new_intent(pool), await _new_intent(pool)
    await store.apply_transitions(pool, [_step(moved, State.VALIDATED)])
    transitions = [_step(moved, State.VALIDATED), _step(other, State.VALIDATED)]  # the first: a redelivery
    results = {
        r.intent.id: r for r in await store.apply_transitions(pool, transitions, {moved.id: moved, other.id: other})
    }
    assert not results[moved.id].applied and results[moved.id].intent.version == 2
    assert results[other.id].applied and results[other.id].intent == await store.load_intent(pool, other.id)
