"""Proves the limit counters' contract on real Valkey and PostgreSQL: a reservation is all or nothing per
intent and idempotent per intent id, a release gives places back once and blocks a late redelivery, a
missing counter is rebuilt from exactly the intents PostgreSQL says count (an admitted intent whose
CLEARED is not yet committed included), and concurrent rebuilds never count twice; and that counters are
per currency: a USD intent takes, rebuilds and gives back places only in USD counters, a THB one only in
THB counters."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from pm.domain.intent import Intent, OperationType, State
from pm.domain.limits import Counter, LimitRule, Period, counters_for, released_key
from pm.redis import limit_counters
from pm.redis.limit_counters import ReservationStatus
from pm.redis.wire import redis_from_url
from pm.store import intents
from pm.store.limit_members import rebuild_members
from pm.store.migrate import migrate

P2P = OperationType.P2P_TRANSFER
# Redis is shared by the session: users and rule ids of their own keep these counters apart.
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


@dataclasses.dataclass
class Store:
    pool: asyncpg.Pool
    redis: aioredis.Redis

    async def intent(
        self,
        user_id: int,
        amount_minor: int,
        state: State = State.PRICED,
        operation_type: OperationType = P2P,
        tags: tuple[str, ...] = (),
        needs_operator: bool = False,
        age: timedelta = timedelta(0),
        currency: str = "THB",
    ) -> Intent:
        created = await intents.create_intent(
            self.pool, api_key_id="test", idempotency_key=uuid.uuid4().hex, request_hash=b"t",
            operation_type=operation_type, amount_minor=amount_minor, currency=currency, sender_id=user_id,
            recipient_id=user_id + 1, operator_id=None, tags=list(tags),
        )  # fmt: skip
        assert created.created is not None
        refused = state in (State.REJECTED, State.FAILED)
        await self.pool.execute(
            "UPDATE pm.intent SET state = $2, error_code = $3, needs_operator = $4, created_at = now() - $5::interval"
            " WHERE id = $1",
            created.created.id, str(state), "TEST" if refused else None, needs_operator, age,
        )  # fmt: skip
        loaded = await intents.load_intent(self.pool, created.created.id)
        assert loaded is not None
        return loaded

    async def counter(self, counter: Counter) -> dict[str, str]:
        raw = await self.redis.hgetall(counter.key)
        return {key.decode(): value.decode() for key, value in raw.items()}

    async def reserve(self, *plans: tuple[Intent, tuple[LimitRule, ...]]) -> list[limit_counters.Reservation]:
        planned = [(intent, counters_for(intent, rules)) for intent, rules in plans]
        outcome = await limit_counters.reserve(self.redis, functools.partial(rebuild_members, self.pool), planned)
        return [outcome[intent.id] for intent, _ in plans]


@pytest.fixture(scope="module")
async def store(fresh_database, redis_url) -> AsyncIterator[Store]:
    database_url = await fresh_database()
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    redis = redis_from_url(redis_url)
    try:
        yield Store(pool, redis)
    finally:
        await redis.aclose()
        await pool.close()


def new_rule(max_amount_minor: int, max_count: int | None = None, **changes: object) -> LimitRule:
    return dataclasses.replace(
        LimitRule(next(_ids), 1, None, None, Period.DAILY, max_amount_minor, max_count, currency="THB"), **changes
    )


def new_user() -> int:
    return next(_ids)


async def test_a_redelivery_takes_no_second_place(store: Store) -> None:
    user, rule = new_user(), new_rule(10_000)
    payment = await store.intent(user, 3_000)
    [first] = await store.reserve((payment, (rule,)))
    [again] = await store.reserve((payment, (rule,)))
    assert (first.status, again.status) == (ReservationStatus.RESERVED, ReservationStatus.HELD)
    [counter] = counters_for(payment, (rule,))
    assert await store.counter(counter) == {"_amount": "3000", "_count": "1", str(payment.id): "3000"}
    assert 0 < await store.redis.ttl(counter.key) <= 2 * 24 * 3600 + 60


async def test_all_or_nothing_across_an_intents_counters(store: Store) -> None:
    user = new_user()
    daily, monthly = new_rule(10_000), new_rule(4_000, period=Period.MONTHLY)
    payment = await store.intent(user, 5_000)
    [refused] = await store.reserve((payment, (daily, monthly)))
    assert refused.status == ReservationStatus.EXCEEDED and not refused.admitted
    assert refused.exceeded is not None and refused.exceeded.rule == monthly
    assert (refused.remaining_amount_minor, refused.remaining_count) == (4_000, None)
    for counter in counters_for(payment, (daily, monthly)):
        # Rebuilt (empty: the call's own intent is decided, not counted) and left so: nothing taken.
        assert await store.counter(counter) == {"_amount": "0", "_count": "0"}


async def test_the_count_cap_refuses_the_next_intent_and_says_none_remain(store: Store) -> None:
    user, rule = new_user(), new_rule(10_000, max_count=2)
    payments = [await store.intent(user, 100) for _ in range(3)]
    outcomes = await store.reserve(*((payment, (rule,)) for payment in payments))
    assert [o.status for o in outcomes] == [ReservationStatus.RESERVED] * 2 + [ReservationStatus.EXCEEDED]
    assert (outcomes[2].remaining_amount_minor, outcomes[2].remaining_count) == (9_800, 0)


async def test_release_gives_places_back_once_and_blocks_a_late_redelivery(store: Store) -> None:
    user, rule = new_user(), new_rule(10_000)
    kept, failed = await store.intent(user, 1_000), await store.intent(user, 2_000)
    await store.reserve((kept, (rule,)), (failed, (rule,)))
    final = dataclasses.replace(failed, state=State.FAILED, error_code="EXPIRED")
    plan = [(final, counters_for(final, (rule,)))]
    assert await limit_counters.release(store.redis, plan) == 1
    assert await limit_counters.release(store.redis, plan) == 0
    [counter] = counters_for(kept, (rule,))
    assert await store.counter(counter) == {"_amount": "1000", "_count": "1", str(kept.id): "1000"}
    assert await store.redis.exists(released_key(final)) == 1
    [late] = await store.reserve((failed, (rule,)))
    assert late.status == ReservationStatus.RELEASED and not late.admitted
    assert (await store.counter(counter))["_amount"] == "1000"


async def test_a_missing_counter_is_rebuilt_from_exactly_what_postgres_counts(store: Store) -> None:
    user, rule = new_user(), new_rule(10_000, operation_type="P2P_TRANSFER", tag="kyc_verified")
    kyc = ("kyc_verified",)
    counted = [
        await store.intent(user, 1_000, State.CLEARED, tags=kyc),
        await store.intent(user, 2_000, State.AUTHORIZED, tags=kyc),
        await store.intent(user, 3_000, State.SETTLED, tags=("vip", "kyc_verified")),
    ]
    queued = await store.intent(user, 500, State.PRICED, tags=kyc)
    for ignored in (
        store.intent(user, 4_000, State.REJECTED, tags=kyc),
        store.intent(user, 4_100, State.FAILED, tags=kyc),
        store.intent(user, 600, State.PRICED, tags=kyc, needs_operator=True),  # dead-lettered
        store.intent(user, 700, State.VALIDATED, tags=kyc),  # not priced yet: it will be checked
        store.intent(user, 800, State.SETTLED),  # no tag
        store.intent(user, 900, State.SETTLED, OperationType.THAI_QR_PAY, tags=kyc),
        store.intent(user + 1, 1_100, State.SETTLED, tags=kyc),  # another user
        store.intent(user, 1_200, State.SETTLED, tags=kyc, age=timedelta(days=2)),  # another day
    ):
        await ignored
    new = await store.intent(user, 100, tags=kyc)
    [outcome] = await store.reserve((new, (rule,)))
    assert outcome.status == ReservationStatus.RESERVED
    [counter] = counters_for(new, (rule,))
    held = await store.counter(counter)
    assert (held.pop("_amount"), held.pop("_count")) == ("6600", "5")
    assert held == {
        **{str(i.id): str(i.amount_minor) for i in counted},
        str(queued.id): "p500",  # provisional: counted, not yet checked
        str(new.id): "100",
    }


async def test_an_admitted_intent_still_priced_survives_a_lost_counter(store: Store) -> None:
    # The race a rebuild must not lose: X is admitted, the counter vanishes before X's CLEARED commits.
    user, rule = new_user(), new_rule(5_000)
    admitted = await store.intent(user, 3_000)
    assert (await store.reserve((admitted, (rule,))))[0].status == ReservationStatus.RESERVED
    [counter] = counters_for(admitted, (rule,))
    await store.redis.delete(counter.key)
    other = await store.intent(user, 3_000)
    [refused] = await store.reserve((other, (rule,)))
    assert refused.status == ReservationStatus.EXCEEDED and refused.remaining_amount_minor == 2_000
    # X's redelivery is checked against the others (none) and becomes firm.
    [redelivered] = await store.reserve((admitted, (rule,)))
    assert redelivered.status == ReservationStatus.RESERVED
    assert await store.counter(counter) == {"_amount": "3000", "_count": "1", str(admitted.id): "3000"}


async def test_concurrent_rebuilds_never_count_twice(store: Store) -> None:
    user, rule = new_user(), new_rule(4_000)
    await store.intent(user, 1_000, State.SETTLED)
    payments = [await store.intent(user, 1_000) for _ in range(12)]
    # Twelve callers at once, each finding the counter missing and rebuilding it from PostgreSQL.
    outcomes = await asyncio.gather(*(store.reserve((payment, (rule,))) for payment in payments))
    admitted = [o for [o] in outcomes if o.admitted]
    assert len(admitted) == 3
    [counter] = counters_for(payments[0], (rule,))
    held = await store.counter(counter)
    assert (held["_amount"], held["_count"]) == ("4000", "4")
    assert not any(value.startswith("p") for value in held.values())


async def test_an_intent_of_a_long_past_period_is_still_checked_in_it(store: Store) -> None:
    # Re-driven days later (a stuck intent): its counter must not expire the moment it is rebuilt.
    user, rule = new_user(), new_rule(2_000)
    await store.intent(user, 1_500, State.SETTLED, age=timedelta(days=3))
    late = await store.intent(user, 1_000, age=timedelta(days=3))
    [outcome] = await store.reserve((late, (rule,)))
    assert outcome.status == ReservationStatus.EXCEEDED and outcome.remaining_amount_minor == 500
    [counter] = counters_for(late, (rule,))
    assert await store.redis.ttl(counter.key) > 0


async def test_a_counter_rebuilt_above_its_caps_refuses_saying_nothing_remains(store: Store) -> None:
    # The rule was tightened (a new version: a new counter, rebuilt) after three intents were counted under
    # the old one: the rebuilt counter holds more than both caps. The refusal says 0 remain, never "no cap".
    user, rule = new_user(), new_rule(2_000, max_count=2)
    settled = [await store.intent(user, 1_000, State.SETTLED) for _ in range(3)]
    late = await store.intent(user, 100)
    [refused] = await store.reserve((late, (rule,)))
    assert refused.status == ReservationStatus.EXCEEDED and refused.exceeded is not None
    assert (refused.remaining_amount_minor, refused.remaining_count) == (0, 0)
    [counter] = counters_for(late, (rule,))
    assert await store.counter(counter) == {
        "_amount": "3000", "_count": "3", **{str(i.id): "1000" for i in settled},
    }  # fmt: skip


async def test_a_counter_rebuilt_above_its_amount_cap_without_a_count_cap_says_no_count_cap(store: Store) -> None:
    user, rule = new_user(), new_rule(1_500)
    await store.intent(user, 1_000, State.SETTLED)
    await store.intent(user, 1_000, State.AUTHORIZED)
    [refused] = await store.reserve((await store.intent(user, 1), (rule,)))
    assert refused.status == ReservationStatus.EXCEEDED
    assert (refused.remaining_amount_minor, refused.remaining_count) == (0, None)


# -- currencies -------------------------------------------------------------------------------------


async def test_a_usd_intent_never_counts_against_a_thb_cap_nor_a_thb_one_against_a_usd_cap(store: Store) -> None:
    user = new_user()
    baht_cap, dollar_cap = new_rule(5_000), new_rule(3_000, currency="USD")
    rules = (baht_cap, dollar_cap)
    dollars = [await store.intent(user, 1_000, currency="USD") for _ in range(3)]
    baht = await store.intent(user, 5_000)
    outcomes = await store.reserve(*((payment, rules) for payment in [*dollars, baht]))
    # 3,000 USD cents and 5,000 satang: each currency at its own cap exactly, neither refused.
    assert [o.status for o in outcomes] == [ReservationStatus.RESERVED] * 4
    [dollar_counter] = counters_for(dollars[0], rules)
    [baht_counter] = counters_for(baht, rules)
    assert (dollar_counter.rule, baht_counter.rule) == (dollar_cap, baht_cap)
    assert dollar_counter.key != baht_counter.key and ":USD:" in dollar_counter.key and ":THB:" in baht_counter.key
    dollar_held, baht_held = await store.counter(dollar_counter), await store.counter(baht_counter)
    assert (dollar_held["_amount"], dollar_held["_count"]) == ("3000", "3")
    assert baht_held == {"_amount": "5000", "_count": "1", str(baht.id): "5000"}
    # One more cent in USD is refused by the USD cap, saying what remains of it; a satang more in THB too.
    [over_dollars, over_baht] = await store.reserve(
        (await store.intent(user, 1, currency="USD"), rules), (await store.intent(user, 1), rules)
    )
    assert (over_dollars.status, over_dollars.exceeded.rule, over_dollars.remaining_amount_minor) == (
        ReservationStatus.EXCEEDED, dollar_cap, 0,
    )  # fmt: skip
    assert (over_baht.status, over_baht.exceeded.rule, over_baht.remaining_amount_minor) == (
        ReservationStatus.EXCEEDED, baht_cap, 0,
    )  # fmt: skip
    # A currency no rule names is not limited: no counter at all.
    assert counters_for(await store.intent(user, 10**6, currency="EUR"), rules) == []


async def test_a_rebuild_counts_only_the_intents_in_the_counters_currency(store: Store) -> None:
    user = new_user()
    dollar_cap = new_rule(4_000, currency="USD")
    await store.intent(user, 2_500, State.SETTLED, currency="USD")
    await store.intent(user, 1_000, State.CLEARED, currency="USD")
    for baht in (store.intent(user, 9_000, State.SETTLED), store.intent(user, 9_000, State.CLEARED)):
        await baht  # the same user's baht: never in a USD counter
    late = await store.intent(user, 600, currency="USD")
    [refused] = await store.reserve((late, (dollar_cap,)))
    assert refused.status == ReservationStatus.EXCEEDED and refused.remaining_amount_minor == 500
    [counter] = counters_for(late, (dollar_cap,))
    held = await store.counter(counter)
    assert (held["_amount"], held["_count"]) == ("3500", "2")
    fits = await store.intent(user, 500, currency="USD")
    assert (await store.reserve((fits, (dollar_cap,))))[0].status == ReservationStatus.RESERVED


async def test_a_refused_usd_intent_gives_back_its_usd_place_and_leaves_thb_alone(store: Store) -> None:
    user = new_user()
    rules = (new_rule(10_000), new_rule(10_000, currency="USD"))
    kept_baht, failed_dollars = await store.intent(user, 2_000), await store.intent(user, 700, currency="USD")
    await store.reserve((kept_baht, rules), (failed_dollars, rules))
    final = dataclasses.replace(failed_dollars, state=State.FAILED, error_code="PSP_DECLINED")
    # What the outbox feed calls with the final intents: the currency comes with each intent.
    assert await limit_counters.release_refused(store.redis, rules, [final]) == 1
    [dollar_counter] = counters_for(final, rules)
    [baht_counter] = counters_for(kept_baht, rules)
    assert await store.counter(dollar_counter) == {"_amount": "0", "_count": "0"}
    assert await store.counter(baht_counter) == {"_amount": "2000", "_count": "1", str(kept_baht.id): "2000"}


async def _replica_link_up(replica: aioredis.Redis, timeout_s: float = 10.0) -> None:
    deadline_s = asyncio.get_running_loop().time() + timeout_s
    while (await replica.info("replication")).get("master_link_status") != "up":
        assert asyncio.get_running_loop().time() < deadline_s, "the replica never caught up with its master"
        await asyncio.sleep(0.05)


async def test_with_wait_replicas_a_write_no_replica_acknowledged_is_an_outage(store: Store, tmp_path) -> None:
    """PM_REDIS_LIMITS_WAIT_REPLICAS=1 on a master with a real replica: a reservation and a release count
    once the replica has them. With the replica gone, the same calls raise ReplicationLagError, which a
    stage takes for Redis being down (its batch is retried, its delivery uncounted): the limits stage never
    admits an intent on a reservation a failover could lose. Retried once the replica is back, the
    reservation is the same one (idempotent per intent)."""
    from consumers.runtime import dependency_down
    from tests.support.valkey import KillableValkey

    master_server, replica_server = KillableValkey(tmp_path / "master"), KillableValkey(tmp_path / "replica")
    master_server.start()
    replica_server.start()
    master, replica = redis_from_url(master_server.url), redis_from_url(replica_server.url)
    # Calls that must be acknowledged get a generous wait (a loaded CI machine); those that must not, 200 ms.
    waiting, lagging_wait = (limit_counters.Durability(replicas=1, timeout_ms=ms) for ms in (5_000, 200))
    rebuild = functools.partial(rebuild_members, store.pool)
    try:
        await master.config_set("repl-diskless-sync-delay", 0)  # a full sync at once, not after 5 s
        await replica.execute_command("REPLICAOF", "127.0.0.1", str(master_server.port))
        await _replica_link_up(replica)
        user, rule = new_user(), new_rule(10_000)
        first, second = await store.intent(user, 3_000), await store.intent(user, 4_000)
        [counter] = counters_for(first, (rule,))
        reserved = await limit_counters.reserve(master, rebuild, [(first, [counter])], waiting)
        assert reserved[first.id].status == ReservationStatus.RESERVED
        assert (await replica.hget(counter.key, str(first.id))) == b"3000"  # the replica has it

        await replica.execute_command("REPLICAOF", "NO", "ONE")  # the master now has no replica
        with pytest.raises(limit_counters.ReplicationLagError) as lagging:
            await limit_counters.reserve(master, rebuild, [(second, [counter])], lagging_wait)
        assert dependency_down(lagging.value) == "redis"
        refused = dataclasses.replace(first, state=State.REJECTED)
        with pytest.raises(limit_counters.ReplicationLagError):
            await limit_counters.release(master, [(refused, [counter])], lagging_wait)

        await replica.execute_command("REPLICAOF", "127.0.0.1", str(master_server.port))
        await _replica_link_up(replica)
        retried = await limit_counters.reserve(master, rebuild, [(second, [counter])], waiting)
        assert retried[second.id].status == ReservationStatus.HELD  # the place taken before, not a second one
        # The release's write reached the master though no replica acknowledged it: given back once, and
        # its retry (the history stage's batch, redelivered) changes nothing.
        assert await master.hget(counter.key, "_amount") == b"4000"
        assert await limit_counters.release(master, [(refused, [counter])], waiting) == 0
    finally:
        await master.aclose()
        await replica.aclose()
        replica_server.stop()
        master_server.stop()
