"""Refunds (issue 13 part 4) through the real gateway on a running pipeline (real PostgreSQL, Valkey, the
postgres ledger): partial and full refunds of a P2P transfer and of a mini-app charge move the money back
through transit with exact balances (the original's fees kept), both users see them in their history,
transit returns to zero, debits equal credits and `pm reconcile`'s checks find nothing; ten concurrent
refunds of 30% each let exactly three through; a refund the payer cannot pay is REJECTED
INSUFFICIENT_FUNDS with nothing held and its reservation given back; and every refusal (a stranger, the
sender, a key without REFUND, another merchant, a non-settled original, a refund of a refund, the wrong
currency, too much) writes nothing."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

from consumers import history as history_stage
from ledger import accounts
from pm.cli import reconciliation
from pm.domain import signing
from pm.domain.intent import ErrorCode, Intent, State
from pm.domain.pricing import FeeKind
from pm.redis import streams
from pm.store import allowances, fee_rules
from pm.store.audit import Actor
from pm.store.fee_rules import FeeRuleFields
from tests.support.gateway_pipeline import GatewayPipeline, Key, error_of, gateway_on_pipeline
from tests.support.pipeline import transfers_in_ledger

USER_OPERATIONS = "P2P_TRANSFER,REFUND"
MERCHANT_OPERATIONS = "MINIAPP_CHARGE,MINIAPP_CREDIT,REFUND"
APP_SCOPES = "intents:write,intents:read,balance:read"
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_ids(count: int) -> list[int]:
    return [next(_ids) for _ in range(count)]


def refund_body(original: uuid.UUID, amount_minor: int, currency: str = "THB") -> dict[str, Any]:
    return {"operation_type": "REFUND", "amount_minor": amount_minor, "currency": currency, "refund_of": str(original)}


async def created(world: GatewayPipeline, key: Key, body: dict[str, Any], user_id: int | None) -> Intent:
    """POST /intents, 202, then the intent once the pipeline finished it."""
    response = await world.post_intent(key, body, user_id=user_id)
    assert response.status == 202, await response.text()
    intent_id = uuid.UUID((await response.json())["id"])
    return (await world.pipeline.wait_finished([intent_id]))[intent_id]


async def refunded_minor(world: GatewayPipeline, intent_id: uuid.UUID) -> int:
    return await world.pipeline.context.pool.fetchval("SELECT refunded_minor FROM pm.intent WHERE id = $1", intent_id)


async def posted(world: GatewayPipeline, account: accounts.NamedAccount) -> tuple[int, int]:
    found = await world.pipeline.context.ledger.lookup_accounts([account.id])
    if not found:
        return 0, 0
    return found[0].credits_posted - found[0].debits_posted, found[0].debits_pending


async def assert_clean(world: GatewayPipeline) -> None:
    """The ledger check (transit 0, debits = credits) and every check of `pm reconcile`."""
    report = await world.pipeline.check()
    assert report.ok, report.problems
    assert all(t.posted_net == 0 for t in report.transit)
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())
    reconciled = await reconciliation.reconcile(world.pipeline.context.pool, world.pipeline.context.ledger)
    assert reconciled.ok and reconciled.intents_checked > 0, reconciled.mismatches


async def history_of(world: GatewayPipeline, user_id: int, intent_id: uuid.UUID) -> list[dict[str, Any]]:
    return [row for row in await world.pipeline.history(user_id) if row["intent_id"] == intent_id]


async def add_p2p_fee(world: GatewayPipeline) -> None:
    fields = FeeRuleFields(
        name="p2p pre", operation_type="P2P_TRANSFER", channel="INTERNAL_P2P", condition="true", amount="100",
        kind=FeeKind.PRE, priority=10, currency="THB",
    )  # fmt: skip
    await fee_rules.create_rule(world.pipeline.context.pool, Actor(api_key_id="test", operator_id=None), fields)


async def test_partial_and_full_refunds_of_a_transfer_move_money_back_exactly(fresh_database, redis_url) -> None:
    alice, bob = new_ids(2)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await add_p2p_fee(world)  # alice pays 100 on top: kept by the house on a refund
        await pipeline.wait_finished([(await pipeline.fund(alice, 100_000)).id])
        key = await world.key(APP_SCOPES, USER_OPERATIONS)
        transfer = await created(
            world, key, {"operation_type": "P2P_TRANSFER", "amount_minor": 30_000, "currency": "THB",
                         "recipient_id": bob}, alice,
        )  # fmt: skip
        assert (transfer.state, transfer.fee_pre_minor) == (State.SETTLED, 100)

        partial = await created(world, key, refund_body(transfer.id, 10_000), bob)
        assert (partial.state, partial.channel, partial.refund_of) == (State.SETTLED, "REFUND", transfer.id)
        assert (partial.sender_id, partial.recipient_id, partial.fee_pre_minor) == (bob, alice, 0)
        assert await pipeline.balance(alice) == (100_000 - 30_100 + 10_000, 0)
        assert await pipeline.balance(bob) == (20_000, 0)
        assert await refunded_minor(world, transfer.id) == 10_000
        legs = {t.id: t for t in await transfers_in_ledger(pipeline, partial)}
        hold = legs[accounts.transfer_id(partial.id, "hold")]
        assert (hold.debit_account_id, hold.amount, hold.code) == (accounts.user(bob, "THB").id, 10_000, 500)
        payout = legs[accounts.transfer_id(partial.id, "recipient")]
        assert (payout.credit_account_id, payout.amount) == (accounts.user(alice, "THB").id, 10_000)
        await assert_clean(world)

        too_much = await world.post_intent(key, refund_body(transfer.id, 20_001), user_id=bob)
        assert await error_of(too_much) == (422, "REFUND_EXCEEDS_ORIGINAL")
        rest = await created(world, key, refund_body(transfer.id, 20_000), bob)
        assert rest.state == State.SETTLED
        one_more = await world.post_intent(key, refund_body(transfer.id, 1), user_id=bob)
        assert await error_of(one_more) == (422, "REFUND_EXCEEDS_ORIGINAL")
        assert await refunded_minor(world, transfer.id) == 30_000
        assert await pipeline.balance(alice) == (100_000 - 100, 0)
        assert await pipeline.balance(bob) == (0, 0)
        assert await posted(world, accounts.fees("THB")) == (100, 0)

        # Both users see each refund: alice a credit from bob, bob a debit to alice.
        for refund in (partial, rest):
            [credit] = await history_of(world, alice, refund.id)
            assert (credit["direction"], credit["operation_type"], credit["counterparty_id"]) == (
                "CREDIT",
                "REFUND",
                bob,
            )
            [debit] = await history_of(world, bob, refund.id)
            assert (debit["direction"], debit["amount_minor"], debit["counterparty_id"]) == (
                "DEBIT",
                refund.amount_minor,
                alice,
            )
        read = await world.send("GET", f"/intents/{partial.id}", key=key, user_id=alice)
        assert (await read.json())["refund_of"] == str(transfer.id)
        await assert_clean(world)


async def test_a_merchant_refunds_its_own_charge_and_no_other(fresh_database, redis_url) -> None:
    user, merchant_id, other_merchant = new_ids(3)
    merchant = accounts.merchant(merchant_id, "THB")
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await pipeline.wait_finished([(await pipeline.fund(user, 50_000)).id])
        merchant_key = await world.key("intents:write,intents:read", MERCHANT_OPERATIONS, merchant_id=merchant_id)
        charge_body = {"operation_type": "MINIAPP_CHARGE", "amount_minor": 20_000, "currency": "THB"}
        # The user's consent, granted beforehand: the charge settles without waiting for a confirmation.
        await allowances.grant(pipeline.context.pool, user, merchant_id, "THB", 20_000)
        charge = await created(world, merchant_key, charge_body, user)
        assert charge.state == State.SETTLED

        other_key = await world.key("intents:write", MERCHANT_OPERATIONS, merchant_id=other_merchant)
        assert await error_of(await world.post_intent(other_key, refund_body(charge.id, 1), user_id=user)) == (
            404,
            "NOT_FOUND",
        )
        no_refunds = await world.key("intents:write", None, merchant_id=merchant_id)  # the default: no REFUND
        refused = await world.post_intent(no_refunds, refund_body(charge.id, 1), user_id=user)
        assert await error_of(refused) == (403, "OPERATION_NOT_ALLOWED")
        assert await world.writes_by(other_key) == (0, 0) and await world.writes_by(no_refunds) == (0, 0)

        refund = await created(world, merchant_key, refund_body(charge.id, 5_000), None)
        assert (refund.state, refund.sender_id, refund.recipient_id) == (State.SETTLED, None, user)
        assert refund.merchant_id == merchant_id
        assert await posted(world, merchant) == (15_000, 0)
        assert await pipeline.balance(user) == (35_000, 0)
        [row] = await history_of(world, user, refund.id)
        assert (row["direction"], row["amount_minor"], row["merchant_id"]) == ("CREDIT", 5_000, merchant_id)
        assert await refunded_minor(world, charge.id) == 5_000
        await assert_clean(world)


async def test_a_refused_refund_cannot_be_replayed_into_one_once_its_original_settles(
    fresh_database, redis_url
) -> None:
    """A merchant asks to refund a charge still waiting for its user (422 NOT_REFUNDABLE); the user then
    confirms it and it settles. The same signed bytes sent again are 401 (the refusal claimed the nonce):
    nothing is refunded. A new signature of the same refund goes through as any refund."""
    user, merchant_id = new_ids(2)
    merchant = accounts.merchant(merchant_id, "THB")
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await pipeline.wait_finished([(await pipeline.fund(user, 50_000)).id])
        merchant_key = await world.key("intents:write,intents:read", MERCHANT_OPERATIONS, merchant_id=merchant_id)
        app_key = await world.key("consent:write", "none")
        charge_body = {"operation_type": "MINIAPP_CHARGE", "amount_minor": 20_000, "currency": "THB"}
        answer = await world.post_intent(merchant_key, charge_body, user_id=user)  # no allowance: it waits
        assert answer.status == 202, await answer.text()
        charge_id = uuid.UUID((await answer.json())["id"])
        await wait_for_state(world, charge_id, State.AWAITING_CONFIRMATION)

        body = json.dumps(refund_body(charge_id, 5_000)).encode()
        headers = signing.sign_headers(
            key_id=merchant_key.key_id, secret=merchant_key.secret, method="POST", path="/intents", raw_query="",
            body=body, user_id=None, idempotency_key=uuid.uuid4().hex,
        )  # fmt: skip
        refused = await world.client.request("POST", "/intents", data=body, headers=headers)
        assert await error_of(refused) == (422, "NOT_REFUNDABLE")
        confirmed = await world.send("POST", f"/intents/{charge_id}/confirm", key=app_key, user_id=user)
        assert confirmed.status == 200, await confirmed.text()
        assert (await pipeline.wait_finished([charge_id]))[charge_id].state == State.SETTLED

        replayed = await world.client.request("POST", "/intents", data=body, headers=headers)
        assert await error_of(replayed) == (401, "UNAUTHENTICATED")
        assert await world.writes_by(merchant_key) == (1, 1)  # the charge alone
        assert await refunded_minor(world, charge_id) == 0
        assert await posted(world, merchant) == (20_000, 0)
        assert await pipeline.balance(user) == (30_000, 0)

        refund = await created(world, merchant_key, refund_body(charge_id, 5_000), None)
        assert refund.state == State.SETTLED
        assert await posted(world, merchant) == (15_000, 0)
        assert await pipeline.balance(user) == (35_000, 0)
        await assert_clean(world)


async def wait_for_state(world: GatewayPipeline, intent_id: uuid.UUID, state: State, timeout_s: float = 30.0) -> None:
    deadline_s = asyncio.get_running_loop().time() + timeout_s
    query = "SELECT state FROM pm.intent WHERE id = $1"
    while await world.pipeline.context.pool.fetchval(query, intent_id) != state:
        assert asyncio.get_running_loop().time() < deadline_s, f"{intent_id} never reached {state}"
        await asyncio.sleep(0.05)


async def test_who_may_refund_and_what_is_refused_with_nothing_written(fresh_database, redis_url) -> None:
    alice, bob, stranger = new_ids(3)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
        key = await world.key(APP_SCOPES, USER_OPERATIONS)
        p2p = {"operation_type": "P2P_TRANSFER", "currency": "THB", "recipient_id": bob}
        transfer = await created(world, key, {**p2p, "amount_minor": 4_000}, alice)
        unpaid = await created(world, key, {**p2p, "amount_minor": 999_999}, alice)
        assert (unpaid.state, unpaid.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
        refusing = await world.key(APP_SCOPES, USER_OPERATIONS)
        p2p_only = await world.key(APP_SCOPES, "P2P_TRANSFER")

        cases = [
            (refusing, refund_body(transfer.id, 1), stranger, (404, "NOT_FOUND")),
            (refusing, refund_body(uuid.uuid4(), 1), bob, (404, "NOT_FOUND")),
            (refusing, refund_body(transfer.id, 1), alice, (403, "FORBIDDEN")),  # the sender
            (refusing, refund_body(transfer.id, 1), None, (400, "BAD_REQUEST")),
            (p2p_only, refund_body(transfer.id, 1), bob, (403, "OPERATION_NOT_ALLOWED")),
            (refusing, refund_body(unpaid.id, 1), bob, (422, "NOT_REFUNDABLE")),
            (refusing, refund_body(transfer.id, 1, "USD"), bob, (422, "VALIDATION_FAILED")),
            (refusing, refund_body(transfer.id, 4_001), bob, (422, "REFUND_EXCEEDS_ORIGINAL")),
            (refusing, {**refund_body(transfer.id, 1), "recipient_id": stranger}, bob, (422, "INVALID_PARTY")),
            (refusing, {**refund_body(transfer.id, 1), "refund_of": None}, bob, (422, "VALIDATION_FAILED")),
            (refusing, {**p2p, "amount_minor": 1, "refund_of": str(transfer.id)}, alice, (422, "INVALID_PARTY")),
        ]  # fmt: skip
        for caller, body, user_id, expected in cases:
            assert await error_of(await world.post_intent(caller, body, user_id=user_id)) == expected, body
        assert await world.writes_by(refusing) == (0, 0) and await world.writes_by(p2p_only) == (0, 0)
        assert await refunded_minor(world, transfer.id) == 0

        admin = await world.key("admin", "REFUND")
        by_admin = await created(world, admin, refund_body(transfer.id, 1_000), None)
        assert (by_admin.state, by_admin.sender_id, by_admin.recipient_id) == (State.SETTLED, bob, alice)
        of_a_refund = await world.post_intent(admin, refund_body(by_admin.id, 1), user_id=None)
        assert await error_of(of_a_refund) == (422, "NOT_REFUNDABLE")
        assert await pipeline.balance(alice) == (10_000 - 4_000 + 1_000, 0)
        assert await pipeline.balance(bob) == (3_000, 0)
        await assert_clean(world)


async def test_a_refund_the_payer_cannot_pay_is_rejected_and_gives_its_reservation_back(
    fresh_database, redis_url
) -> None:
    alice, bob, carol = new_ids(3)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
        key = await world.key(APP_SCOPES, USER_OPERATIONS)
        p2p = {"operation_type": "P2P_TRANSFER", "currency": "THB"}
        transfer = await created(world, key, {**p2p, "amount_minor": 6_000, "recipient_id": bob}, alice)
        spent = await created(world, key, {**p2p, "amount_minor": 5_000, "recipient_id": carol}, bob)
        assert (transfer.state, spent.state) == (State.SETTLED, State.SETTLED)

        unpaid = await created(world, key, refund_body(transfer.id, 6_000), bob)
        assert (unpaid.state, unpaid.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
        assert await transfers_in_ledger(pipeline, unpaid) == []
        assert await pipeline.balance(bob) == (1_000, 0)
        assert await refunded_minor(world, transfer.id) == 0  # given back by the history stage
        [row] = await history_of(world, bob, unpaid.id)  # the refunder asked, and sees the refusal
        assert (row["amount_minor"], row["error_code"]) == (0, "INSUFFICIENT_FUNDS")

        # The history stage gives back once: the same final intent handled again changes nothing.
        await pipeline.context.pool.execute("UPDATE pm.intent SET refunded_minor = 6000 WHERE id = $1", transfer.id)
        await pipeline.context.redis.xadd(pipeline.topology.stage("history").stream, streams.entry_fields(unpaid))
        await asyncio.sleep(1.0)  # the stage reads it at once (block_ms); it finds the intent finished
        assert await refunded_minor(world, transfer.id) == 6_000
        await pipeline.context.pool.execute("UPDATE pm.intent SET refunded_minor = 0 WHERE id = $1", transfer.id)

        # The original and its refused refund in one batch (a backlog; a re-drive after Redis lost its data):
        # both are finished and the refund's amount is still given back (one statement updating the original
        # twice kept only one of the two updates).
        await pipeline.context.pool.execute(
            "UPDATE pm.intent SET finished = false,"
            " refunded_minor = CASE WHEN id = $1 THEN 6000 ELSE refunded_minor END WHERE id = ANY($2::uuid[])",
            transfer.id,
            [transfer.id, unpaid.id],
        )
        await history_stage.handle([transfer, unpaid], pipeline.context)
        assert await refunded_minor(world, transfer.id) == 0
        finished = await pipeline.context.pool.fetch(
            "SELECT finished FROM pm.intent WHERE id = ANY($1::uuid[])", [transfer.id, unpaid.id]
        )
        assert [row["finished"] for row in finished] == [True, True]

        paid = await created(world, key, refund_body(transfer.id, 1_000), bob)
        assert paid.state == State.SETTLED
        assert await pipeline.balance(alice) == (5_000, 0)
        assert await refunded_minor(world, transfer.id) == 1_000
        await assert_clean(world)


async def test_ten_concurrent_refunds_of_30_percent_let_exactly_three_through(fresh_database, redis_url) -> None:
    alice, bob = new_ids(2)
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
        key = await world.key(APP_SCOPES, USER_OPERATIONS)
        body = {"operation_type": "P2P_TRANSFER", "amount_minor": 10_000, "currency": "THB", "recipient_id": bob}
        transfer = await created(world, key, body, alice)

        responses = await asyncio.gather(
            *(world.post_intent(key, refund_body(transfer.id, 3_000), user_id=bob) for _ in range(10))
        )
        answers = [await error_of(response) for response in responses]
        accepted = [(await r.json())["id"] for r in responses if r.status == 202]
        assert len(accepted) == 3, answers
        assert sorted(answers).count((422, "REFUND_EXCEEDS_ORIGINAL")) == 7, answers
        finished = await pipeline.wait_finished([uuid.UUID(intent_id) for intent_id in accepted])
        assert {intent.state for intent in finished.values()} == {State.SETTLED}
        assert await refunded_minor(world, transfer.id) == 9_000
        assert await pipeline.balance(alice) == (9_000, 0)
        assert await pipeline.balance(bob) == (1_000, 0)
        refunds = await pipeline.context.pool.fetchval(
            "SELECT count(*) FROM pm.intent WHERE refund_of = $1", transfer.id
        )
        assert refunds == 3
        await assert_clean(world)
