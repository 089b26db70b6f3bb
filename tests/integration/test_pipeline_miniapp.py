"""The MINIAPP channel in the running pipeline (real PostgreSQL, Valkey, postgres ledger): a charge moves the
user's a + f to the merchant (a - g) and the fees account (f + g), a credit moves the merchant's a + f to
the user, transit returns to zero and debits equal credits; a credit beyond the merchant's balance is
REJECTED INSUFFICIENT_FUNDS with nothing held; an intent without its merchant is refused INVALID_PARTY;
limits count a charge against the paying user and never limit a credit; only users get history rows.
Every charge here is within an allowance its user granted the merchant (tests/integration/
test_miniapp_consent.py: without one it waits for the user's confirmation); a refused one gives it back."""

from __future__ import annotations

import random
import uuid

from ledger import accounts
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.limits import Period
from pm.domain.pricing import FeeKind
from pm.redis import streams
from pm.store import allowances, fee_rules, intents
from pm.store.audit import Actor
from pm.store.fee_rules import FeeRuleFields
from pm.store.limit_rules import LimitRuleFields
from pm.store.limit_rules import create_rule as create_limit_rule
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline, transfers_in_ledger

CHARGE = OperationType.MINIAPP_CHARGE
CREDIT = OperationType.MINIAPP_CREDIT
ACTOR = Actor(api_key_id="test", operator_id=None)
# Redis (limit counters) is shared by the session: users of their own, from a random base.
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_ids(count: int) -> list[int]:
    return [next(_ids) for _ in range(count)]


async def submit(pipeline: Pipeline, operation: OperationType, amount_minor: int, user: int, merchant: int | None):
    """As the gateway creates a mini-app intent: the user from X-User-Id, the merchant from the key."""
    outcome = await intents.create_intent(
        pipeline.context.pool, api_key_id="test", idempotency_key=uuid.uuid4().hex, request_hash=b"t",
        operation_type=operation, amount_minor=amount_minor, currency="THB",
        sender_id=user if operation == CHARGE else None, recipient_id=user if operation == CREDIT else None,
        operator_id=None, tags=[], merchant_id=merchant,
    )  # fmt: skip
    assert outcome.created is not None
    await pipeline.context.redis.xadd(pipeline.topology.first_stage.stream, streams.entry_fields(outcome.created))
    return outcome.created


async def allow(pipeline: Pipeline, user: int, merchant: int, daily_max_minor: int) -> None:
    """The user lets the merchant charge up to this a day without asking (PUT /api/pm/allowances/...)."""
    await allowances.grant(pipeline.context.pool, user, merchant, "THB", daily_max_minor)


async def used_today(pipeline: Pipeline, user: int, merchant: int) -> int:
    used = await pipeline.context.pool.fetchval(
        "SELECT coalesce(sum(used_minor), 0) FROM pm.miniapp_allowance_usage WHERE user_id = $1 AND merchant_id = $2",
        user, merchant,
    )  # fmt: skip
    return int(used)


async def finish(pipeline: Pipeline, intent: Intent) -> Intent:
    return (await pipeline.wait_finished([intent.id]))[intent.id]


async def posted(pipeline: Pipeline, account: accounts.NamedAccount) -> tuple[int, int]:
    """(posted balance, pending debits) of any account."""
    found = await pipeline.context.ledger.lookup_accounts([account.id])
    if not found:
        return 0, 0
    return found[0].credits_posted - found[0].debits_posted, found[0].debits_pending


async def history_users(pipeline: Pipeline, intent: Intent) -> list[int]:
    rows = await pipeline.context.pool.fetch("SELECT user_id FROM pm.history WHERE intent_id = $1", intent.id)
    return [row["user_id"] for row in rows]


async def add_fee(pipeline: Pipeline, operation: OperationType, kind: FeeKind, amount: str) -> None:
    fields = FeeRuleFields(
        name=f"{operation} {kind}", operation_type=str(operation), channel="MINIAPP", condition="true",
        amount=amount, kind=kind, priority=10, currency="THB",
    )  # fmt: skip
    await fee_rules.create_rule(pipeline.context.pool, ACTOR, fields)


async def assert_clean_ledger(pipeline: Pipeline) -> None:
    report = await pipeline.check()
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0]
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())


async def test_a_charge_and_a_credit_settle_with_fees_through_the_merchant(fresh_database, redis_url) -> None:
    user, other, merchant_id = new_ids(3)
    merchant = accounts.merchant(merchant_id, "THB")
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await add_fee(pipeline, CHARGE, FeeKind.PRE, "amount / 100")  # 1% on top, paid by the user
        await add_fee(pipeline, CHARGE, FeeKind.POST, "50")  # the merchant's cut
        await add_fee(pipeline, CREDIT, FeeKind.PRE, "10")  # paid by the merchant, on top
        await finish(pipeline, await pipeline.fund(user, 100_000))
        await allow(pipeline, user, merchant_id, 20_000)  # the amount; fees are on top of it

        charge = await finish(pipeline, await submit(pipeline, CHARGE, 20_000, user, merchant_id))
        assert (charge.state, charge.channel, charge.merchant_id) == (State.SETTLED, "MINIAPP", merchant_id)
        assert (charge.fee_pre_minor, charge.fee_post_minor) == (200, 50)
        assert (await pipeline.states(charge.id))[-2:] == ["AUTHORIZED", "SETTLED"]
        assert await pipeline.balance(user) == (100_000 - 20_200, 0)
        assert await posted(pipeline, merchant) == (20_000 - 50, 0)
        assert await posted(pipeline, accounts.fees("THB")) == (250, 0)
        legs = {t.id: t for t in await transfers_in_ledger(pipeline, charge)}
        assert sorted(t.amount for t in legs.values()) == [250, 19_950, 20_200, 20_200]
        payout = legs[accounts.transfer_id(charge.id, "recipient")]
        assert (payout.credit_account_id, payout.code) == (merchant.id, 400)
        await assert_clean_ledger(pipeline)

        credit = await finish(pipeline, await submit(pipeline, CREDIT, 5_000, other, merchant_id))
        assert (credit.state, credit.fee_pre_minor, credit.fee_post_minor) == (State.SETTLED, 10, 0)
        assert await pipeline.balance(other) == (5_000, 0)
        assert await posted(pipeline, merchant) == (19_950 - 5_010, 0)
        assert await posted(pipeline, accounts.fees("THB")) == (260, 0)
        hold = {t.id: t for t in await transfers_in_ledger(pipeline, credit)}[accounts.transfer_id(credit.id, "hold")]
        assert (hold.debit_account_id, hold.amount, hold.code) == (merchant.id, 5_010, 410)
        await assert_clean_ledger(pipeline)

        # The user sees each movement once; the merchant is not a user and gets no history row.
        assert await history_users(pipeline, charge) == [user]
        assert await history_users(pipeline, credit) == [other]
        [debit] = [h for h in await pipeline.history(user) if h["intent_id"] == charge.id]
        assert (debit["direction"], debit["amount_minor"], debit["fee_minor"]) == ("DEBIT", 20_200, 200)
        assert (debit["operation_type"], debit["counterparty_id"]) == ("MINIAPP_CHARGE", None)
        [received] = await pipeline.history(other)
        assert (received["direction"], received["amount_minor"], received["operation_type"]) == (
            "CREDIT",
            5_000,
            "MINIAPP_CREDIT",
        )


async def test_a_credit_beyond_the_merchant_balance_is_rejected_with_nothing_held(fresh_database, redis_url) -> None:
    user, other, merchant_id = new_ids(3)
    merchant = accounts.merchant(merchant_id, "THB")
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await finish(pipeline, await pipeline.fund(user, 10_000))
        await allow(pipeline, user, merchant_id, 3_000)
        await finish(pipeline, await submit(pipeline, CHARGE, 3_000, user, merchant_id))
        assert await posted(pipeline, merchant) == (3_000, 0)

        too_much = await finish(pipeline, await submit(pipeline, CREDIT, 3_001, other, merchant_id))
        assert (too_much.state, too_much.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
        assert await transfers_in_ledger(pipeline, too_much) == []
        assert await posted(pipeline, merchant) == (3_000, 0)
        assert await pipeline.balance(other) == (0, 0)
        # A merchant never seen before has an empty account: refused the same way.
        stranger = new_ids(1)[0]
        empty = await finish(pipeline, await submit(pipeline, CREDIT, 1, other, stranger))
        assert (empty.state, empty.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
        assert await posted(pipeline, accounts.merchant(stranger, "THB")) == (0, 0)
        await assert_clean_ledger(pipeline)
        # Nothing moved, and the credited user did not ask for it: no history row for anyone.
        assert await history_users(pipeline, too_much) == []

        exact = await finish(pipeline, await submit(pipeline, CREDIT, 3_000, other, merchant_id))
        assert exact.state == State.SETTLED
        assert await posted(pipeline, merchant) == (0, 0)
        assert await pipeline.balance(other) == (3_000, 0)
        await assert_clean_ledger(pipeline)


async def test_an_intent_without_its_merchant_is_refused_invalid_party(fresh_database, redis_url) -> None:
    (user,) = new_ids(1)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await finish(pipeline, await pipeline.fund(user, 1_000))
        charge = await finish(pipeline, await submit(pipeline, CHARGE, 100, user, None))
        credit = await finish(pipeline, await submit(pipeline, CREDIT, 100, user, None))
        assert (charge.state, charge.error_code) == (State.REJECTED, ErrorCode.INVALID_PARTY)
        assert (credit.state, credit.error_code) == (State.REJECTED, ErrorCode.INVALID_PARTY)
        assert await pipeline.balance(user) == (1_000, 0)
        await assert_clean_ledger(pipeline)


async def test_limits_count_charges_against_the_paying_user_and_never_limit_credits(fresh_database, redis_url) -> None:
    user, merchant_id = new_ids(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        # One rule for every operation type: a credit (no sender) must pass it without a counter.
        rule = LimitRuleFields(None, None, Period.DAILY, 1_000, None, enabled=True, currency="THB")
        await create_limit_rule(pipeline.context.pool, ACTOR, rule)
        await finish(pipeline, await pipeline.fund(user, 10_000))
        await allow(pipeline, user, merchant_id, 1_001)
        first = await finish(pipeline, await submit(pipeline, CHARGE, 800, user, merchant_id))
        over = await finish(pipeline, await submit(pipeline, CHARGE, 201, user, merchant_id))
        credit = await finish(pipeline, await submit(pipeline, CREDIT, 800, user, merchant_id))
        assert first.state == State.SETTLED
        assert (over.state, over.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
        assert await used_today(pipeline, user, merchant_id) == 800  # the refused 201 given back
        assert credit.state == State.SETTLED
        assert await pipeline.balance(user) == (10_000, 0)
        assert await posted(pipeline, accounts.merchant(merchant_id, "THB")) == (0, 0)
        await assert_clean_ledger(pipeline)
