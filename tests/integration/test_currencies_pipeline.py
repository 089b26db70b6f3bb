"""Proves that currencies are part of every rule in the running pipeline (real PostgreSQL, Valkey, postgres
ledger): limits count per (user, currency) against caps in that currency (a USD transfer never against a
THB cap, a THB one never against a USD cap), also after the counters are lost and rebuilt from
PostgreSQL, and a USD intent refused after its reservation gives its USD place back; a route names the
currencies it serves (a currency no route serves is REJECTED UNSUPPORTED_CURRENCY); and a PSP channel
refuses a currency its PSP does not carry at validation, REJECTED UNSUPPORTED_CURRENCY with nothing held,
even when a route edited by hand sends it there. Every test ends with exact balances in each currency, a
balanced ledger with transit at zero and nothing pending, and a clean reconcile."""

from __future__ import annotations

import random

from ledger import accounts
from pm.cli import reconciliation
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.limits import Period, counter_keys_match
from pm.store.audit import Actor, bump_rule_generation
from pm.store.limit_rules import LimitRuleFields, create_rule
from tests.support.pipeline import Pipeline, isolated_topology, ledger_transfers_of, open_pipeline

P2P = OperationType.P2P_TRANSFER
ACTOR = Actor("test", None)
# Redis is shared by the session and rule ids restart in every fresh database: users of their own.
_users = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


async def add_p2p_cap(pipeline: Pipeline, currency: str, max_amount_minor: int) -> int:
    fields = LimitRuleFields(P2P, None, Period.DAILY, max_amount_minor, None, enabled=True, currency=currency)
    rule_id = (await create_rule(pipeline.context.pool, ACTOR, fields))["id"]
    pipeline.context.rules.expire()  # this process made the change: it counts at once
    return rule_id


async def pay(pipeline: Pipeline, amount_minor: int, sender: int, recipient: int, currency: str) -> Intent:
    intent = await pipeline.submit(P2P, amount_minor, sender, recipient, currency=currency)
    return (await pipeline.wait_finished([intent.id]))[intent.id]


async def assert_clean(pipeline: Pipeline) -> None:
    """Debits = credits on every ledger, every transit account at zero, no hold pending; PostgreSQL agrees."""
    report = await pipeline.check()
    assert report.ok, report.problems
    for currency in ("THB", "USD"):
        found = await pipeline.context.ledger.lookup_accounts([accounts.transit(currency).id])
        for transit in found:
            assert transit.debits_pending == transit.credits_pending == 0, currency
            assert transit.debits_posted == transit.credits_posted, currency
    reconciled = await reconciliation.reconcile(pipeline.context.pool, pipeline.context.ledger)
    assert reconciled.mismatches == []


async def test_limits_count_each_currency_against_its_own_cap(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        thb_rule, usd_rule = await add_p2p_cap(pipeline, "THB", 5_000), await add_p2p_cap(pipeline, "USD", 3_000)
        async with pipeline.stages():
            funded = [await pipeline.fund(alice, 20_000, "THB"), await pipeline.fund(alice, 2_000, "USD")]
            await pipeline.wait_finished([intent.id for intent in funded])
            # Admitted by the USD cap (3,000 <= 3,000), then refused by dispatch: alice holds 2,000 cents.
            too_much = await pay(pipeline, 3_000, alice, bob, "USD")
            assert (too_much.state, too_much.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
            await pipeline.wait_finished([(await pipeline.fund(alice, 18_000, "USD")).id])
            # 4,000 satang first: if THB counted against the USD cap, the 3,000 cents could not pass.
            assert (await pay(pipeline, 4_000, alice, bob, "THB")).state == State.SETTLED
            # The refused intent gave its USD place back: the whole USD cap is there.
            assert (await pay(pipeline, 3_000, alice, bob, "USD")).state == State.SETTLED
            # If USD counted against the THB cap, 4,000 + 3,000 + 1,000 would pass 5,000.
            assert (await pay(pipeline, 1_000, alice, bob, "THB")).state == State.SETTLED
            keys = [key async for key in pipeline.context.redis.scan_iter(match=counter_keys_match(alice))]
            assert sorted(key.decode().split(":")[4] for key in keys) == ["THB", "USD"]
            await pipeline.context.redis.delete(*keys)  # Redis lost them: PostgreSQL still knows, per currency
            over_usd, over_thb = await pay(pipeline, 1, alice, bob, "USD"), await pay(pipeline, 1, alice, bob, "THB")
            assert (await pay(pipeline, 50_000, alice, bob, "EUR")).error_code == ErrorCode.INSUFFICIENT_FUNDS
        for refused, rule_id, currency, cap in ((over_usd, usd_rule, "USD", 3_000), (over_thb, thb_rule, "THB", 5_000)):
            assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
            assert refused.error_message is not None
            assert f"daily {currency} limit (rule {rule_id} v1" in refused.error_message
            assert f"0 of {cap} minor units remain" in refused.error_message
        assert await pipeline.balance(alice, "USD") == (20_000 - 3_000, 0)
        assert await pipeline.balance(bob, "USD") == (3_000, 0)
        assert await pipeline.balance(alice, "THB") == (20_000 - 5_000, 0)
        assert await pipeline.balance(bob, "THB") == (5_000, 0)
        await assert_clean(pipeline)


async def test_a_currency_no_route_serves_is_rejected_unsupported_currency(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pool = pipeline.context.pool
        async with pool.acquire() as conn, conn.transaction():  # as the admin API would, without its checks
            await conn.execute("UPDATE pm.payment_route SET currencies = '{THB}' WHERE operation_type = 'P2P_TRANSFER'")
            await bump_rule_generation(conn)
        pipeline.context.rules.expire()
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 10_000, "USD")).id])
            refused = await pay(pipeline, 1_000, alice, bob, "USD")
        assert (refused.state, refused.error_code, refused.channel) == (
            State.REJECTED, ErrorCode.UNSUPPORTED_CURRENCY, None,
        )  # fmt: skip
        assert refused.error_message is not None and "serves USD; routes serve THB" in refused.error_message
        assert await pipeline.states(refused.id) == ["CREATED", "REJECTED"]
        assert await pipeline.context.ledger.lookup_transfers(ledger_transfers_of(refused)) == []
        assert await pipeline.balance(alice, "USD") == (10_000, 0)
        assert await pipeline.balance(bob, "USD") == (0, 0)
        await assert_clean(pipeline)


async def test_a_usd_payout_or_top_up_is_rejected_at_validation_with_nothing_held(fresh_database, redis_url) -> None:
    alice = next(_users)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        connector_streams = [pipeline.topology.stage(name).stream for name in ("ipps-connector", "qp-connector")]
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 10_000, "USD")).id])
            # The migrated routes: IPPS and QP serve THB only, so no route takes these.
            by_route = [
                await pipeline.submit(OperationType.IPPS_WITHDRAWAL, 4_000, alice, None, currency="USD",
                                      destination_ref="tok_usd_payout"),
                await pipeline.submit(OperationType.QP_TOPUP, 4_000, None, alice, currency="USD"),
            ]  # fmt: skip
            await pipeline.wait_finished([intent.id for intent in by_route])
            # A route edited by hand to send USD to the PSP channels: the channel itself refuses.
            async with pipeline.context.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE pm.payment_route SET currencies = '{THB,USD}'"
                    " WHERE channel IN ('IPPS_TRANSFER', 'QP_TRANSFER')"
                )
                await bump_rule_generation(conn)
            pipeline.context.rules.expire()
            by_channel = [
                await pipeline.submit(OperationType.IPPS_WITHDRAWAL, 4_000, alice, None, currency="USD",
                                      destination_ref="tok_usd_payout"),
                await pipeline.submit(OperationType.THAI_QR_PAY, 4_000, alice, None, currency="USD",
                                      destination_ref="tok_usd_qr"),
                await pipeline.submit(OperationType.QP_TOPUP, 4_000, None, alice, currency="USD"),
            ]  # fmt: skip
            finished = await pipeline.wait_finished([intent.id for intent in [*by_route, *by_channel]])
        for intent in by_route:
            refused = finished[intent.id]
            assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.UNSUPPORTED_CURRENCY)
            assert refused.error_message is not None and "routes serve THB" in refused.error_message
        for intent in by_channel:
            refused = finished[intent.id]
            assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.UNSUPPORTED_CURRENCY)
            assert refused.error_message is not None and "carries THB" in refused.error_message
        for intent in [*by_route, *by_channel]:
            assert finished[intent.id].channel is None  # never routed: dispatch never saw it
            assert await pipeline.states(intent.id) == ["CREATED", "REJECTED"]
            assert await pipeline.context.ledger.lookup_transfers(ledger_transfers_of(intent)) == []
        assert [await pipeline.context.redis.xlen(stream) for stream in connector_streams] == [0, 0]
        assert await pipeline.balance(alice, "USD") == (10_000, 0)  # nothing held, nothing moved
        psp_accounts = [accounts.psp(name, "USD").id for name in ("IPPS_TRANSFER", "QP_TRANSFER")]
        assert await pipeline.context.ledger.lookup_accounts(psp_accounts) == []  # never even created
        await assert_clean(pipeline)
