"""Settlement races on real PostgreSQL, Valkey and the `postgres` ledger: a PSP success handled by one
consumer after another consumer already voided the hold (the deadline passed) never moves money and is
flagged for review, for a payout and for a top-up alike; a void that finds the hold already posted (a
stale entry) leaves the settled intent alone; a void at the deadline while the PSP does not answer is
flagged for an operator to check."""

from __future__ import annotations

import dataclasses
import itertools
import random
from datetime import timedelta

import pytest
from pipeline_support import isolated_topology, open_pipeline

import channels
from consumers import dispatch, settlement
from ledger import accounts
from ledger.check import run_check
from pm import intents as store
from pm.domain import OperationType, State, Transition
from pm.psp_client import PspClient
from pm.settings import Settings

PATH = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED]


async def authorized(pipeline, operation_type: OperationType, channel_name: str, amount_minor: int, **parties):
    """An intent held by dispatch and AUTHORIZED, as the pipeline leaves it waiting for its PSP."""
    outcome = await store.create_intent(
        pipeline.context.pool, api_key_id="race", idempotency_key=str(random.random()), request_hash=b"h",
        operation_type=operation_type, amount_minor=amount_minor, currency="THB", operator_id=None, **parties,
    )  # fmt: skip
    intent = outcome.created
    for expected, new in itertools.pairwise(PATH):
        transition = Transition(intent.id, expected, new, channel=channel_name if new == State.VALIDATED else None)
        ((result),) = await store.apply_transitions(pipeline.context.pool, [transition])
        intent = result.intent
    channel = channels.channel_of(intent)
    await pipeline.context.ledger.create_accounts([a.to_tigerbeetle() for a in channel.accounts(intent)])
    transitions = await dispatch.handle([intent], pipeline.context)
    if not transitions:  # a top-up: the connector makes it AUTHORIZED once the payment request exists
        transitions = [Transition(intent.id, State.CLEARED, State.AUTHORIZED)]
    ((result),) = await store.apply_transitions(pipeline.context.pool, transitions)
    assert result.applied and result.intent.state == State.AUTHORIZED
    return result.intent


async def settle(pipeline, intent, psp_status: str):
    """One settlement consumer handling `intent` (as its entry carries it) with a PSP's status."""
    transitions = await settlement.handle([dataclasses.replace(intent, psp_status=psp_status)], pipeline.context)
    return await store.apply_transitions(pipeline.context.pool, transitions)


@pytest.mark.parametrize(
    ("operation_type", "channel_name", "expired", "paid"),
    [
        (OperationType.QP_TOPUP, "QP_TRANSFER", "EXPIRED", "PAID"),
        (OperationType.IPPS_WITHDRAWAL, "IPPS_TRANSFER", "DECLINED", "SUCCEEDED"),
    ],
)
async def test_a_success_handled_after_another_consumer_voided_moves_nothing_and_is_flagged(
    fresh_database, redis_url, operation_type, channel_name, expired, paid
) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        user = random.randrange(10**9, 2 * 10**9)
        if operation_type == OperationType.QP_TOPUP:
            parties = {"sender_id": None, "recipient_id": user}
        else:
            await pipeline.context.ledger.create_accounts([accounts.user(user, "THB").to_tigerbeetle()])
            parties = {"sender_id": user, "recipient_id": None, "destination_ref": "tok_race"}
            funding = await pipeline.fund(user, 50_000)
            async with pipeline.stages():
                await pipeline.wait_finished([funding.id])
        intent = await authorized(pipeline, operation_type, channel_name, 20_000, **parties)
        before = await pipeline.balance(user)

        # Consumer A: the deadline (or a decline) voids the hold and fails the intent.
        ((failed),) = await settle(pipeline, intent, expired)
        assert failed.applied and failed.intent.state == State.FAILED
        # Consumer B held the PSP's success all along, in an entry that still says AUTHORIZED.
        ((late),) = await settle(pipeline, intent, paid)
        assert not late.applied and late.intent.state == State.FAILED  # the first ending stands

        assert await pipeline.balance(user) == (before[0], 0)  # nothing credited or debited; the hold released
        psp_account = accounts.psp(channel_name, "THB")
        (psp,) = await pipeline.context.ledger.lookup_accounts([psp_account.id])
        assert (psp.debits_posted, psp.credits_posted, psp.debits_pending, psp.credits_pending) == (0, 0, 0, 0)
        flagged = await pipeline.context.pool.fetchrow(
            "SELECT needs_review, review_reason FROM pm.intent WHERE id = $1", intent.id
        )
        assert flagged["needs_review"] and "PSP paid out" in flagged["review_reason"]
        report = await run_check(pipeline.context.ledger)
        assert report.ok, report.problems


async def test_a_void_that_finds_the_hold_posted_leaves_the_settled_intent_alone(fresh_database, redis_url) -> None:
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        user = random.randrange(10**9, 2 * 10**9)
        intent = await authorized(
            pipeline, OperationType.QP_TOPUP, "QP_TRANSFER", 20_000, sender_id=None, recipient_id=user
        )
        ((settled),) = await settle(pipeline, intent, "PAID")
        assert settled.applied and settled.intent.state == State.SETTLED
        # A stale copy of the entry reaches the deadline path: the void finds the hold posted.
        assert await settlement.handle([dataclasses.replace(intent, psp_status="EXPIRED")], pipeline.context) == []
        assert await pipeline.balance(user) == (20_000, 0)
        assert (await run_check(pipeline.context.ledger)).ok


async def test_a_void_at_the_deadline_without_the_psps_answer_is_flagged(fresh_database, redis_url) -> None:
    """The PSP cannot be reached when the deadline passes: PM voids (before the ledger's timeout would),
    but it does not know the payment failed at the PSP, so an operator is told to check."""
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        user = random.randrange(10**9, 2 * 10**9)
        intent = await authorized(
            pipeline, OperationType.QP_TOPUP, "QP_TRANSFER", 20_000, sender_id=None, recipient_id=user
        )
        unreachable = PspClient(Settings(psp_ipps_url="http://127.0.0.1:1/ipps", psp_qp_url="http://127.0.0.1:1/qp"))
        pipeline.context.psp = unreachable
        try:
            waited_long = dataclasses.replace(intent, updated_at=intent.updated_at - timedelta(hours=1))
            transitions = await settlement.handle([waited_long], pipeline.context)
        finally:
            await unreachable.close()
        assert [(t.new, str(t.error_code)) for t in transitions] == [(State.FAILED, "EXPIRED")]
        flagged = await pipeline.context.pool.fetchrow(
            "SELECT needs_review, review_reason FROM pm.intent WHERE id = $1", intent.id
        )
        assert flagged["needs_review"] and "did not answer" in flagged["review_reason"]
        (psp,) = await pipeline.context.ledger.lookup_accounts([accounts.psp("QP_TRANSFER", "THB").id])
        assert (psp.debits_pending, psp.debits_posted) == (0, 0)  # the hold is released
