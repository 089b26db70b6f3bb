"""The shared round trips on real Valkey and PostgreSQL: concurrent requests' Redis commands each get
their own reply (an error stays with its command, not its batch-mates), and the intents of many requests
are created (and their keys claimed) in one statement, a taken key answered with its claim."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from redis.exceptions import ResponseError

from gateway.batching import IntentWriter, RedisBatch
from pm.domain.intent import OperationType
from pm.redis.wire import redis_from_url
from pm.store import intents as store
from tests.support.gateway import Gateway, new_user


async def test_concurrent_commands_each_get_their_reply(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        batch = RedisBatch(client)
        counter, text = f"test:{uuid.uuid4().hex}:n", f"test:{uuid.uuid4().hex}:s"
        await client.set(text, b"not a number")
        replies = await asyncio.gather(
            *(batch.execute("INCR", counter) for _ in range(300)),
            batch.execute("INCR", text),
            return_exceptions=True,
        )
        assert sorted(replies[:300]) == list(range(1, 301))
        assert isinstance(replies[300], ResponseError)
        assert await batch.execute("GET", counter) == b"300"
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_every_command_of_the_batch() -> None:
    client = redis_from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        batch = RedisBatch(client)
        replies = await asyncio.gather(*(batch.execute("PING") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(reply, Exception) for reply in replies)
    finally:
        await client.aclose()


@pytest.mark.parametrize("count", [1, 700])
async def test_batches_are_bounded_and_every_waiter_is_answered(redis_url: str, count: int) -> None:
    client = redis_from_url(redis_url)
    try:
        batch = RedisBatch(client)
        replies = await asyncio.gather(*(batch.execute("PING") for _ in range(count)))
        assert replies == [True] * count
    finally:
        await client.aclose()


def _new_intent(key: str, *, request_hash: bytes = b"h", currency: str = "THB", tags: tuple[str, ...] = ()):
    return store.NewIntent(
        api_key_id="batch-test", idempotency_key=key, request_hash=request_hash,
        operation_type=OperationType.P2P_TRANSFER, amount_minor=250, currency=currency, sender_id=new_user(),
        recipient_id=new_user(), operator_id=None, tags=tags,
    )  # fmt: skip


async def test_one_statement_creates_new_keys_and_answers_taken_ones(gateway: Gateway) -> None:
    taken = uuid.uuid4().hex
    (first,) = await store.create_intents(gateway.pool, [_new_intent(taken)])
    assert first.created is not None
    fresh = [uuid.uuid4().hex for _ in range(5)]
    requests = [_new_intent(key, tags=("vip", f"t{i}")) for i, key in enumerate(fresh)]
    # Order kept: a taken key in the middle, and a key asked for twice in the same batch.
    requests.insert(2, _new_intent(taken, request_hash=b"other"))
    requests.append(_new_intent(fresh[0], request_hash=b"h"))
    outcomes = await store.create_intents(gateway.pool, requests)
    assert len(outcomes) == len(requests)
    created = [o.created for o in outcomes if o.created is not None]
    assert [(i.state, i.version, i.amount_minor) for i in created] == [("CREATED", 1, 250)] * 5
    assert [i.tags for i in created] == [("vip", f"t{i}") for i in range(5)]
    # The taken key answers its claim: the intent it names (the gateway answers that intent as created)
    # and the first request's hash, so a different body is seen.
    assert outcomes[2].existing is not None and outcomes[2].created is None
    assert outcomes[2].existing.intent_id == first.created.id
    assert outcomes[2].existing.response_status is None
    assert outcomes[2].existing.request_hash == b"h"
    # The repeat in the same batch sees the first one's claim in flight.
    repeat = outcomes[-1].existing
    assert repeat is not None and repeat.response_status is None
    assert repeat.intent_id == outcomes[0].created.id
    count = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.intent WHERE api_key_id = 'batch-test' AND idempotency_key = ANY($1::text[])",
        [*fresh, taken],
    )
    events = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.intent_event WHERE intent_id = ANY($1::uuid[])", [i.id for i in created]
    )
    assert (count, events) == (6, 5)


async def test_a_refused_intent_fails_alone_in_its_batch(gateway: Gateway) -> None:
    writer = IntentWriter(gateway.pool)
    keys = [uuid.uuid4().hex for _ in range(30)]
    # Lower-case currency breaks the table's CHECK: the whole statement fails, then each is tried alone.
    requests = [_new_intent(key, currency="thb" if i == 7 else "THB") for i, key in enumerate(keys)]
    replies = await asyncio.gather(*(writer.create(r) for r in requests), return_exceptions=True)
    assert isinstance(replies[7], asyncpg.CheckViolationError)
    assert all(r.created is not None for i, r in enumerate(replies) if i != 7)
    stored = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.intent WHERE api_key_id = 'batch-test' AND idempotency_key = ANY($1::text[])", keys
    )
    claims = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.idempotency WHERE api_key_id = 'batch-test' AND idempotency_key = ANY($1::text[])",
        keys,
    )
    assert (stored, claims) == (29, 29)  # nothing of the refused one is left half-written


async def test_concurrent_writers_share_keys_without_deadlock(gateway: Gateway) -> None:
    """Two gateways' batches over the same keys, in opposite orders: each key is created exactly once."""
    keys = [uuid.uuid4().hex for _ in range(200)]
    writers = [IntentWriter(gateway.pool), IntentWriter(gateway.pool)]
    replies = await asyncio.gather(
        *(writers[0].create(_new_intent(key)) for key in keys),
        *(writers[1].create(_new_intent(key)) for key in reversed(keys)),
    )
    asked = [*keys, *reversed(keys)]
    created = [key for key, reply in zip(asked, replies, strict=True) if reply.created is not None]
    assert sorted(created) == sorted(keys)
    assert all(r.existing is not None for r in replies if r.created is None)
