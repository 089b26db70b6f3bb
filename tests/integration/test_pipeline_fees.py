"""The stages with CEL fee rules on real PostgreSQL, Valkey and the postgres ledger: a P2P with a PRE fee
and a POST fee settles with the sender paying a + f, the recipient getting a - g and fees:THB f + g,
transit back to zero; an edited rule prices new intents with its new version while an intent already
priced keeps the version and fees it recorded; a failing rule or a POST fee not below the amount rejects the
intent with nothing held; a rule prices only intents of its currency (a USD transfer pays the USD rule's
fee into fees:USD, never the THB rule's minimum)."""

from __future__ import annotations

import asyncio
import itertools

from ledger import accounts
from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.domain.intent import ErrorCode, OperationType, State
from pm.domain.pricing import FeeKind
from pm.store import fee_rules
from pm.store.audit import Actor
from pm.store.fee_rules import FeeRuleFields
from tests.support.pipeline import isolated_topology, open_pipeline, transfers_in_ledger

P2P = OperationType.P2P_TRANSFER
ACTOR = Actor(api_key_id="test", operator_id=None)
_users = itertools.count(40_000)


def new_users(count: int) -> list[int]:
    return [next(_users) for _ in range(count)]


def fields(condition: str, amount: str, kind: FeeKind, **changes) -> FeeRuleFields:
    return FeeRuleFields(
        name=f"{kind} test", operation_type="P2P_TRANSFER", channel="INTERNAL_P2P", condition=condition,
        amount=amount, kind=kind, priority=10, currency=changes.pop("currency", "THB"), **changes,
    )  # fmt: skip


async def fees_balance(pipeline, currency: str = "THB") -> int:
    found = await pipeline.context.ledger.lookup_accounts([accounts.fees(currency).id])
    return found[0].credits_posted - found[0].debits_posted if found else 0


async def wait_for_reload() -> None:
    # Every process re-reads the rule generation at most this long after a change (pm.store.rule_cache).
    await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)


async def test_pre_and_post_fees_settle_into_the_fees_account(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        pool = pipeline.context.pool
        pre = await fee_rules.create_rule(pool, ACTOR, fields("amount >= 1000", "amount / 100", FeeKind.PRE))
        post = await fee_rules.create_rule(pool, ACTOR, fields("true", "25", FeeKind.POST, min_fee_minor=30))
        funding = await pipeline.fund(alice, 50_000)
        assert (await pipeline.wait_finished([funding.id]))[funding.id].fee_rules == ()  # never priced

        payment = await pipeline.submit(P2P, 12_345, alice, bob)
        intent = (await pipeline.wait_finished([payment.id]))[payment.id]

        assert intent.state == State.SETTLED
        assert (intent.fee_pre_minor, intent.fee_post_minor) == (123, 30)  # truncated 1%; POST raised to its min
        assert list(intent.fee_rules) == [
            {"id": pre.rule.id, "version": 1, "kind": "PRE", "fee_minor": 123},
            {"id": post.rule.id, "version": 1, "kind": "POST", "fee_minor": 30},
        ]
        assert await pipeline.balance(alice) == (50_000 - 12_345 - 123, 0)
        assert await pipeline.balance(bob) == (12_345 - 30, 0)
        assert await fees_balance(pipeline) == 123 + 30
        report = await pipeline.check()
        assert report.ok, report.problems
        assert [t.posted_net for t in report.transit] == [0]
        legs = await transfers_in_ledger(pipeline, intent)
        assert sorted(t.amount for t in legs) == sorted([12_345 + 123, 12_345 + 123, 12_345 - 30, 123 + 30])
        [debit] = [h for h in await pipeline.history(alice) if h["direction"] == "DEBIT"]
        assert (debit["amount_minor"], debit["fee_minor"]) == (12_345 + 123, 123)
        [credit] = await pipeline.history(bob)
        assert (credit["amount_minor"], credit["fee_minor"]) == (12_345 - 30, 30)


async def test_an_edit_prices_new_intents_and_never_changes_a_priced_one(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        pool = pipeline.context.pool
        await pipeline.wait_finished([(await pipeline.fund(alice, 100_000)).id])
        rule = await fee_rules.create_rule(pool, ACTOR, fields("true", "10", FeeKind.POST))
        await wait_for_reload()  # the stage loaded the rules (none) when it priced the funding
        first = await pipeline.submit(P2P, 1_000, alice, bob)
        first_priced = (await pipeline.wait_finished([first.id]))[first.id]

        await fee_rules.update_rule(pool, ACTOR, rule.rule.id, fields("true", "20", FeeKind.POST))
        await wait_for_reload()
        second = await pipeline.submit(P2P, 1_000, alice, bob)
        finished = await pipeline.wait_finished([first.id, second.id])

        assert finished[first.id] == first_priced  # untouched by the edit
        assert (finished[first.id].fee_post_minor, finished[first.id].fee_rules[0]["version"]) == (10, 1)
        assert (finished[second.id].fee_post_minor, finished[second.id].fee_rules[0]["version"]) == (20, 2)
        assert await pipeline.balance(bob) == (1_000 - 10 + 1_000 - 20, 0)
        assert await fees_balance(pipeline) == 30

        await fee_rules.disable_rule(pool, ACTOR, rule.rule.id)
        await wait_for_reload()
        third = await pipeline.submit(P2P, 1_000, alice, bob)
        assert (await pipeline.wait_finished([third.id]))[third.id].fee_rules == ()
        assert (await pipeline.check()).ok


async def test_a_rule_prices_only_intents_of_its_currency(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        pool = pipeline.context.pool
        # "1%, at least 5.00 THB" and a flat 0.25 THB POST fee: neither may price a USD intent.
        thb = await fee_rules.create_rule(pool, ACTOR, fields("true", "amount / 100", FeeKind.PRE, min_fee_minor=500))
        thb_post = await fee_rules.create_rule(pool, ACTOR, fields("true", "25", FeeKind.POST))
        usd = await fee_rules.create_rule(pool, ACTOR, fields("true", "7", FeeKind.PRE, currency="USD"))
        funded = [await pipeline.fund(alice, 10_000, "USD"), await pipeline.fund(alice, 10_000, "THB")]
        await pipeline.wait_finished([intent.id for intent in funded])
        await wait_for_reload()

        dollars = await pipeline.submit(P2P, 1_000, alice, bob, currency="USD")
        baht = await pipeline.submit(P2P, 1_000, alice, bob, currency="THB")
        finished = await pipeline.wait_finished([dollars.id, baht.id])

        paid_in_dollars, paid_in_baht = finished[dollars.id], finished[baht.id]
        assert (paid_in_dollars.state, paid_in_baht.state) == (State.SETTLED, State.SETTLED)
        assert (paid_in_dollars.fee_pre_minor, paid_in_dollars.fee_post_minor) == (7, 0)
        assert list(paid_in_dollars.fee_rules) == [{"id": usd.rule.id, "version": 1, "kind": "PRE", "fee_minor": 7}]
        assert (paid_in_baht.fee_pre_minor, paid_in_baht.fee_post_minor) == (500, 25)  # 1% raised to its min
        assert [r["id"] for r in paid_in_baht.fee_rules] == [thb.rule.id, thb_post.rule.id]
        assert await pipeline.balance(alice, "USD") == (10_000 - 1_000 - 7, 0)
        assert await pipeline.balance(bob, "USD") == (1_000, 0)
        assert await fees_balance(pipeline, "USD") == 7
        assert await pipeline.balance(alice, "THB") == (10_000 - 1_000 - 500, 0)
        assert await pipeline.balance(bob, "THB") == (1_000 - 25, 0)
        assert await fees_balance(pipeline, "THB") == 500 + 25
        report = await pipeline.check()
        assert report.ok, report.problems
        assert [t.posted_net for t in report.transit] == [0, 0]


async def test_a_failing_rule_or_a_post_fee_not_below_the_amount_rejects_with_nothing_held(
    fresh_database, redis_url
) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        pool = pipeline.context.pool
        await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
        failing = await fee_rules.create_rule(pool, ACTOR, fields("amount / (amount - 777) > 0", "1", FeeKind.PRE))
        await fee_rules.create_rule(pool, ACTOR, fields("true", "500", FeeKind.POST))
        await wait_for_reload()
        broken = await pipeline.submit(P2P, 777, alice, bob)
        too_small = await pipeline.submit(P2P, 499, alice, bob)
        equal = await pipeline.submit(P2P, 500, alice, bob)
        fine = await pipeline.submit(P2P, 501, alice, bob)
        finished = await pipeline.wait_finished([broken.id, too_small.id, equal.id, fine.id])

        assert (finished[broken.id].state, finished[broken.id].error_code) == (State.REJECTED, ErrorCode.FEE_RULE_ERROR)
        assert f"fee rule {failing.rule.id}" in str(finished[broken.id].error_message)
        assert (finished[too_small.id].state, finished[too_small.id].error_code) == (
            State.REJECTED, ErrorCode.FEE_EXCEEDS_AMOUNT,
        )  # fmt: skip
        assert await transfers_in_ledger(pipeline, finished[broken.id]) == []
        assert await transfers_in_ledger(pipeline, finished[too_small.id]) == []
        # A POST fee equal to the amount is refused too: the recipient would get nothing.
        assert (finished[equal.id].state, finished[equal.id].error_code) == (
            State.REJECTED, ErrorCode.FEE_EXCEEDS_AMOUNT,
        )  # fmt: skip
        assert await transfers_in_ledger(pipeline, finished[equal.id]) == []
        # One minor unit more: the recipient gets 1, the fees account the rest.
        assert finished[fine.id].state == State.SETTLED
        assert await pipeline.balance(alice) == (10_000 - 501, 0)
        assert await pipeline.balance(bob) == (1, 0)
        assert await fees_balance(pipeline) == 500
        assert (await pipeline.check()).ok
