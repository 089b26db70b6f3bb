"""The stages on real PostgreSQL, Valkey and the postgres ledger: P2P and adjustments settle with the
right balances and transit back to zero, refusals end REJECTED with nothing held, every transition is
recorded once, and redelivered, orphaned, stuck, poisoned or malformed entries change nothing twice."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import channels
from consumers.runtime import StageRunner
from pm.domain.intent import ErrorCode, OperationType, State
from pm.redis import streams
from tests.support.pipeline import isolated_topology, open_pipeline, transfers_in_ledger

P2P = OperationType.P2P_TRANSFER
_users = itertools.count(10_000)


def new_users(count: int) -> list[int]:
    return [next(_users) for _ in range(count)]


async def test_p2p_settles_with_balances_history_and_clean_ledger(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        funding = await pipeline.fund(alice, 50_000)
        await pipeline.wait_finished([funding.id])
        payment = await pipeline.submit(P2P, 12_345, alice, bob)
        finished = await pipeline.wait_finished([payment.id])

        intent = finished[payment.id]
        assert intent.state == State.SETTLED and intent.channel == "INTERNAL_P2P"
        assert await pipeline.states(payment.id) == [
            "CREATED",
            "VALIDATED",
            "PRICED",
            "CLEARED",
            "AUTHORIZED",
            "SETTLED",
        ]
        assert intent.version == 6
        assert await pipeline.balance(alice) == (50_000 - 12_345, 0)
        assert await pipeline.balance(bob) == (12_345, 0)
        report = await pipeline.check()
        assert report.ok, report.problems
        assert [t.posted_net for t in report.transit] == [0]
        history_alice = await pipeline.history(alice)
        assert [(h["direction"], h["amount_minor"], h["state"]) for h in history_alice] == [
            ("CREDIT", 50_000, "SETTLED"),
            ("DEBIT", 12_345, "SETTLED"),
        ]
        assert [(h["direction"], h["amount_minor"]) for h in await pipeline.history(bob)] == [("CREDIT", 12_345)]
        legs = await transfers_in_ledger(pipeline, intent)
        assert {t.user_data_128 for t in legs} == {intent.id.int}
        assert len(legs) == 3  # hold, post, recipient (no fee)


async def test_insufficient_funds_rejects_and_holds_nothing(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        await pipeline.wait_finished([(await pipeline.fund(alice, 1_000)).id])
        too_much = await pipeline.submit(P2P, 1_001, alice, bob)
        intent = (await pipeline.wait_finished([too_much.id]))[too_much.id]

        assert intent.state == State.REJECTED
        assert intent.error_code == ErrorCode.INSUFFICIENT_FUNDS
        assert await pipeline.balance(alice) == (1_000, 0)
        assert await pipeline.balance(bob) == (0, 0)
        assert await transfers_in_ledger(pipeline, intent) == []
        assert (await pipeline.check()).ok
        assert [(h["state"], h["amount_minor"], h["error_code"]) for h in (await pipeline.history(alice))[1:]] == [
            ("REJECTED", 0, "INSUFFICIENT_FUNDS")
        ]


@pytest.mark.parametrize(
    ("sender", "recipient", "amount", "code"),
    [
        ("alice", "alice", 100, ErrorCode.SAME_PARTY),
        ("alice", None, 100, ErrorCode.INVALID_PARTY),
        ("alice", "bob", 10**15, None),  # within the default route: insufficient funds instead
    ],
)
async def test_validation_refusals(fresh_database, redis_url, sender, recipient, amount, code) -> None:
    alice, bob = new_users(2)
    users = {"alice": alice, "bob": bob, None: None}
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline, pipeline.stages():
        intent = await pipeline.submit(P2P, amount, users[sender], users[recipient])
        finished = (await pipeline.wait_finished([intent.id]))[intent.id]
        assert finished.state == State.REJECTED
        assert finished.error_code == (code or ErrorCode.INSUFFICIENT_FUNDS)
        assert (await pipeline.check()).ok


async def test_no_enabled_route_rejects(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        await pipeline.context.pool.execute(
            "UPDATE pm.payment_route SET enabled = false WHERE operation_type = 'P2P_TRANSFER'"
        )
        async with pipeline.stages():
            intent = await pipeline.submit(P2P, 100, alice, bob)
            finished = (await pipeline.wait_finished([intent.id]))[intent.id]
    assert (finished.state, finished.error_code) == (State.REJECTED, ErrorCode.NO_ROUTE)


async def test_the_same_entry_twice_changes_nothing_the_second_time(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 5_000)).id])
        intent = await pipeline.submit(P2P, 700, alice, bob, publish=False)
        topology = pipeline.topology
        for name in ("validation", "fees", "limits", "dispatch", "settlement"):
            stage = topology.stage(name)
            # The entry of this stage, delivered twice (as after a lost acknowledgement).
            current = await pipeline.context.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent.id)
            assert current in [str(s) for s in stage.input_states]
            from pm.store.intents import load_intent

            snapshot = await load_intent(pipeline.context.pool, intent.id)
            fields = {key.encode(): value for key, value in streams.entry_fields(snapshot).items()}
            runner = StageRunner(stage, pipeline.context)
            first = await runner.process([(b"1-1", fields)])
            balances_after_first = (await pipeline.balance(alice), await pipeline.balance(bob))
            second = await runner.process([(b"1-2", fields)])
            assert (first.applied, first.stale) == (1, 0), name
            assert (second.applied, second.stale) == (0, 1), name
            assert (await pipeline.balance(alice), await pipeline.balance(bob)) == balances_after_first, name
        assert await pipeline.states(intent.id) == [
            "CREATED",
            "VALIDATED",
            "PRICED",
            "CLEARED",
            "AUTHORIZED",
            "SETTLED",
        ]
        assert await pipeline.balance(alice) == (4_300, 0)
        assert await pipeline.balance(bob) == (700, 0)
        assert (await pipeline.check()).ok


async def test_entries_of_a_dead_consumer_are_claimed_and_finish(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    topology = isolated_topology(claim_idle_ms=300)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 9_000)).id])
        payments = [await pipeline.submit(P2P, 1_000, alice, bob) for _ in range(3)]
        # A consumer that read the entries and died: they sit pending on it.
        read = await pipeline.context.redis.xreadgroup(
            topology.first_stage.group, "dead-consumer", {topology.first_stage.stream: ">"}, count=10
        )
        assert len(read[0][1]) == 3
        async with pipeline.stages():
            finished = await pipeline.wait_finished([p.id for p in payments])
        assert {i.state for i in finished.values()} == {State.SETTLED}
        assert await pipeline.balance(bob) == (3_000, 0)
        pending = await pipeline.context.redis.xpending(topology.first_stage.stream, topology.first_stage.group)
        assert pending["pending"] == 0


async def test_commit_without_publish_is_healed_on_redelivery(fresh_database, redis_url) -> None:
    """A consumer committed VALIDATED, then died before publishing and acknowledging."""
    alice, bob = new_users(2)
    topology = isolated_topology(claim_idle_ms=300)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 2_000)).id])
        intent = await pipeline.submit(P2P, 500, alice, bob)
        await pipeline.context.redis.xreadgroup(
            topology.first_stage.group, "died-after-commit", {topology.first_stage.stream: ">"}, count=1
        )
        await pipeline.context.pool.execute(
            "UPDATE pm.intent SET state = 'VALIDATED', version = 2, channel = 'INTERNAL_P2P' WHERE id = $1", intent.id
        )
        await pipeline.context.pool.execute(
            "INSERT INTO pm.intent_event (intent_id, version, state) VALUES ($1, 2, 'VALIDATED')", intent.id
        )
        async with pipeline.stages():  # no poller: the claim path alone must heal it
            finished = await pipeline.wait_finished([intent.id], timeout_s=20)
        assert finished[intent.id].state == State.SETTLED
        assert await pipeline.balance(bob) == (500, 0)


async def test_a_failing_entry_is_dead_lettered_and_flagged_without_its_batchmates(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    topology = isolated_topology(claim_idle_ms=200, max_deliveries=2)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 5_000)).id])
        poisoned = await pipeline.submit(P2P, 666, alice, bob, publish=False)
        healthy = await pipeline.submit(P2P, 100, alice, bob, publish=False)
        fees = channels.REGISTRY["INTERNAL_P2P"]
        original_settle = fees.settle

        def settle(intent):
            if intent.id == poisoned.id:
                raise RuntimeError("poisoned intent for the test")
            return original_settle(intent)

        fees.settle = settle  # type: ignore[method-assign]
        try:
            stream = topology.first_stage.stream
            for intent in (poisoned, healthy):
                await pipeline.context.redis.xadd(stream, streams.entry_fields(intent))
            async with pipeline.stages():
                await pipeline.wait_finished([healthy.id])
                for _ in range(600):  # up to a minute: claims run every claim_idle_ms / 2, slower on a busy machine
                    dead = await pipeline.context.redis.xrange(topology.stage("settlement").dead_letter_stream)
                    if dead:
                        break
                    await asyncio.sleep(0.1)
        finally:
            fees.settle = original_settle  # type: ignore[method-assign]
        assert len(dead) == 1
        fields = dead[0][1]
        assert b"poisoned intent for the test" in fields[b"error"]
        assert int(fields[b"deliveries"]) >= 2
        row = await pipeline.context.pool.fetchrow(
            "SELECT state, needs_operator FROM pm.intent WHERE id = $1", poisoned.id
        )
        assert (row["state"], row["needs_operator"]) == ("AUTHORIZED", True)
        settlement = topology.stage("settlement")
        assert (await pipeline.context.redis.xpending(settlement.stream, settlement.group))["pending"] == 0
        # The poisoned intent's money is still held, not lost: an operator decides (pm ledger check shows it).
        assert await pipeline.balance(alice) == (5_000 - 100, 666)


async def test_a_malformed_entry_goes_straight_to_the_dead_letter_stream(fresh_database, redis_url) -> None:
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        runner = StageRunner(topology.first_stage, pipeline.context)
        outcome = await runner.process([(b"5-1", {b"intent": b"{not json"})])
        assert outcome.malformed == 1
        dead = await pipeline.context.redis.xrange(topology.first_stage.dead_letter_stream)
        assert len(dead) == 1 and b"malformed entry" in dead[0][1][b"error"]


async def test_poller_redrives_an_intent_whose_entry_was_lost(fresh_database, redis_url) -> None:
    alice, bob = new_users(2)
    topology = isolated_topology(stuck_after_s=1)
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 3_000)).id])
        lost = await pipeline.submit(P2P, 300, alice, bob, publish=False)  # as if Redis lost the entry
        async with pipeline.stages(with_poller=True):
            finished = await pipeline.wait_finished([lost.id], timeout_s=30)
        assert finished[lost.id].state == State.SETTLED
        assert await pipeline.balance(bob) == (300, 0)


async def test_expired_hold_fails_the_intent(fresh_database, redis_url, monkeypatch) -> None:
    alice, bob = new_users(2)
    monkeypatch.setattr(type(channels.REGISTRY["INTERNAL_P2P"]), "hold_timeout_s", 1)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 1_000)).id])
        intent = await pipeline.submit(P2P, 400, alice, bob)
        async with pipeline.stages(["validation", "fees", "limits", "dispatch"]):
            for _ in range(600):  # up to 30 s on a busy machine
                if (
                    await pipeline.context.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1", intent.id)
                    == "AUTHORIZED"
                ):
                    break
                await asyncio.sleep(0.05)
        assert await pipeline.balance(alice) == (1_000, 400)
        await asyncio.sleep(1.5)  # the hold's timeout passes before settlement runs
        async with pipeline.stages(["settlement", "history"]):
            finished = (await pipeline.wait_finished([intent.id]))[intent.id]
        assert (finished.state, finished.error_code) == (State.FAILED, ErrorCode.EXPIRED)
        assert await pipeline.balance(alice) == (1_000, 0)
        assert await pipeline.balance(bob) == (0, 0)
        assert (await pipeline.check()).ok


async def test_ledger_requests_are_cut_between_chains_never_inside(fresh_database, redis_url) -> None:
    """With a 5-event request limit, the 2-transfer settlement chains go 2 per request and all still settle."""
    alice, bob = new_users(2)
    async with open_pipeline(fresh_database, redis_url, isolated_topology()) as pipeline:
        pipeline.context.ledger_request_events_max = 5
        async with pipeline.stages():
            await pipeline.wait_finished([(await pipeline.fund(alice, 10_000)).id])
            payments = [await pipeline.submit(P2P, 1_000, alice, bob) for _ in range(4)]
            finished = await pipeline.wait_finished([p.id for p in payments])
        assert {i.state for i in finished.values()} == {State.SETTLED}
        assert await pipeline.balance(bob) == (4_000, 0)
        assert (await pipeline.check()).ok
