"""What only a cluster can show: the keys really spread over its masters, a batch of many users' limit
places is taken and given back across slots, and streams that do not share a hash tag are refused at
start rather than failing with CROSSSLOT at the first batch."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio.cluster import RedisCluster

from pm.config.topology import parse_topology, renamed_document
from pm.domain.intent import Intent, State
from pm.domain.limits import counters_for, released_key
from pm.redis import limit_counters, streams
from pm.redis.limit_counters import ReservationStatus
from pm.redis.wire import redis_from_url
from pm.store import intents
from tests.integration.test_limit_counters import Store, new_rule, new_user, store  # noqa: F401

USERS = 40


async def _masters_holding(redis: RedisCluster, keys: list[str]) -> set[str]:
    return {redis.get_node_from_key(key).name for key in keys}


async def test_the_url_names_a_cluster_of_three_masters(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        assert isinstance(client, RedisCluster)
        await client.initialize()
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


async def test_one_batch_of_many_users_reserves_and_releases_across_slots(store: Store) -> None:  # noqa: F811
    rule = new_rule(10_000, max_count=1)
    payments = [await store.intent(new_user(), 4_000) for _ in range(USERS)]
    assert isinstance(store.redis, RedisCluster)
    reserved = await store.reserve(*((payment, (rule,)) for payment in payments))
    keys = [released_key(payment) for payment in payments]
    assert len(await _masters_holding(store.redis, keys)) == 3, "the users' keys must spread over the masters"
    assert {r.status for r in reserved} == {ReservationStatus.RESERVED}
    again = await store.reserve(*((payment, (rule,)) for payment in payments))
    assert {r.status for r in again} == {ReservationStatus.HELD}
    for payment in payments:
        [counter] = counters_for(payment, (rule,))
        assert await store.counter(counter) == {"_amount": "4000", "_count": "1", str(payment.id): "4000"}
    for payment in payments:
        await store.pool.execute(
            "UPDATE pm.intent SET state = 'REJECTED', error_code = 'TEST' WHERE id = $1", payment.id
        )
    refused = [await _reloaded(store, payment.id) for payment in payments]
    given_back = await limit_counters.release(store.redis, [(i, counters_for(i, (rule,))) for i in refused])
    assert given_back == USERS
    for payment in refused:
        [counter] = counters_for(payment, (rule,))
        assert await store.counter(counter) == {"_amount": "0", "_count": "0"}
        assert await store.redis.exists(released_key(payment)) == 1


async def _reloaded(store: Store, intent_id: uuid.UUID) -> Intent:  # noqa: F811
    loaded = await intents.load_intent(store.pool, intent_id)
    assert loaded is not None and loaded.state == State.REJECTED
    return loaded


async def test_streams_without_one_hash_tag_are_refused_on_a_cluster(redis_url: str) -> None:
    untagged = renamed_document(f"t{uuid.uuid4().hex[:10]}:")
    for stage in untagged["stages"].values():
        stage["stream"] = stage["stream"].replace("{streams}", "plain")
    client = redis_from_url(redis_url)
    try:
        with pytest.raises(streams.ClusterTopologyError, match="same hash tag"):
            await streams.ensure_groups(client, parse_topology(untagged))
        tagged = parse_topology(renamed_document(f"t{uuid.uuid4().hex[:10]}:"))
        assert len(await streams.ensure_groups(client, tagged)) == len(tagged.stages)
    finally:
        await client.aclose()
