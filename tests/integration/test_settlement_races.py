"""Settlement races on real PostgreSQL, Valkey and the `postgres` ledger: a PSP success handled by one
consumer after another consumer already voided the hold (the deadline passed) never moves money and is
flagged for review, for a payout and for a top-up alike; a void that finds the hold already posted (a
stale entry) leaves the settled intent alone; a payment voided at the deadline is watched until its
PSP answers finally, and a late success (or no final answer in the window) is flagged."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time

import pytest
from aiohttp.test_utils import TestServer

import channels
from consumers import dispatch, psp_watch, settlement
from consumers.holds import look_up_holds
from ledger import accounts
from ledger.check import run_check
from pm.config.settings import Settings
from pm.dev.psp_sim import create_sim_app
from pm.domain.intent import OperationType, State, Transition
from pm.psp.client import PspClient
from pm.psp.secrets import SIMULATOR_SETTINGS
from pm.store import intents as store
from tests.support.pipeline import isolated_topology, open_pipeline

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


async def void_at_deadline(pipeline, intent, psp: PspClient) -> None:
    """Settlement finds `intent` past its deadline without an outcome (PSP asked through `psp`) and voids."""
    pipeline.context.psp = psp
    pipeline.context.clock = lambda: time.time() + 3_600  # an hour later: past the outcome deadline
    try:
        transitions = await settlement.handle([intent], pipeline.context)
    finally:
        pipeline.context.clock = time.time
    assert [(t.new, str(t.error_code)) for t in transitions] == [(State.FAILED, "EXPIRED")]
    await store.apply_transitions(pipeline.context.pool, transitions)


async def make_due(pipeline) -> None:
    await pipeline.context.pool.execute("UPDATE pm.psp_watch SET next_check_at = now()")


async def review_reason(pipeline, intent_id) -> str | None:
    return await pipeline.context.pool.fetchval("SELECT review_reason FROM pm.intent WHERE id = $1", intent_id)


async def test_a_payment_voided_at_the_deadline_is_watched_until_the_psp_answers(fresh_database, redis_url) -> None:
    """Voided blind (the PSP did not answer at the deadline): watched; the PSP later reports it paid, with
    no callback ever coming, and the poller's check flags it; a declined one ends its watch quietly; one
    with no final answer in the window is flagged too."""
    async with (
        open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline,
        TestServer(create_sim_app(Settings(psp_sim_delay_ms=0)), host="127.0.0.1") as sim,
    ):
        base = str(sim.make_url("")).rstrip("/")
        reachable = PspClient(Settings(**SIMULATOR_SETTINGS, psp_ipps_url=f"{base}/ipps", psp_qp_url=f"{base}/qp"))
        unreachable = PspClient(
            Settings(**SIMULATOR_SETTINGS, psp_ipps_url="http://127.0.0.1:1/ipps", psp_qp_url="http://127.0.0.1:1/qp")
        )
        try:
            paid, declined, silent = [
                await authorized(pipeline, OperationType.QP_TOPUP, "QP_TRANSFER", amount, sender_id=None,
                                 recipient_id=random.randrange(10**9, 2 * 10**9))
                for amount in (20_000, 20_113, 20_021)
            ]  # fmt: skip
            for intent in (paid, declined, silent):
                await void_at_deadline(pipeline, intent, unreachable)
            watched = await pipeline.context.pool.fetch("SELECT intent_id FROM pm.psp_watch")
            assert {row["intent_id"] for row in watched} == {paid.id, declined.id, silent.id}
            assert await review_reason(pipeline, paid.id) is None  # not known to be paid yet

            # The QR requests reach QP after all (a submit in flight when PM voided; the channel itself
            # refuses to submit for a voided hold): one is paid, one expires unpaid (13).
            qp = channels.REGISTRY["QP_TRANSFER"]
            holds = await look_up_holds(pipeline.context, [paid, declined])
            for intent in (paid, declined):
                with pytest.raises(AssertionError):
                    await qp.submit_one(intent, holds[intent.id], reachable, time.time())
                await reachable.submit_payment_request(
                    qp.provider,
                    str(intent.id),
                    callback_url=reachable.callback_url(qp.name),
                    amount_minor=intent.amount_minor,
                    currency="THB",
                    expires_in_s=60,
                )
            await asyncio.sleep(0.2)  # the simulator's delay is 0: paid at once; 13 stays PENDING
            await make_due(pipeline)
            assert await psp_watch.check_due(pipeline.context.pool, reachable) == 3
            assert "paid after PM voided" in (await review_reason(pipeline, paid.id) or "")
            assert await review_reason(pipeline, declined.id) is None  # still pending at QP: watched on
            assert await review_reason(pipeline, silent.id) is None  # QP never got it: nothing to watch
            left = await pipeline.context.pool.fetch("SELECT intent_id FROM pm.psp_watch")
            assert {row["intent_id"] for row in left} == {declined.id}

            # No final answer within the window (24 h): flagged, so no payment is left unknown.
            await pipeline.context.pool.execute("UPDATE pm.psp_watch SET watch_until = now(), next_check_at = now()")
            assert await psp_watch.check_due(pipeline.context.pool, unreachable) == 1
            assert "no final answer" in (await review_reason(pipeline, declined.id) or "")
            assert await pipeline.context.pool.fetchval("SELECT count(*) FROM pm.psp_watch") == 0
            # Nothing was credited for any of them: the holds were voided.
            for intent in (paid, declined, silent):
                assert await pipeline.balance(intent.recipient_id) == (0, 0)
            assert (await run_check(pipeline.context.ledger)).ok
        finally:
            await reachable.close()
            await unreachable.close()
