"""pm.redis.streams on real Valkey: the publish-and-ack script, claiming, dead letters, trimming below
what every group acknowledged, and forgiving a delivery that failed because a dependency was down."""

from __future__ import annotations

import asyncio
import uuid

from pm.redis import streams


def _names() -> tuple[str, str, str, str]:
    prefix = f"test:{{{uuid.uuid4().hex[:10]}}}"  # one hash tag: the streams share a slot, as on a cluster
    return f"{prefix}:in", f"{prefix}:a", f"{prefix}:b", "group"


async def _read_all(redis, stream: str, group: str, count: int) -> list[bytes]:
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    rows = await redis.xreadgroup(group, "reader", {stream: ">"}, count=count)
    return [entry_id for _, entries in rows for entry_id, _ in entries]


async def test_one_call_publishes_to_every_target_and_acks_the_whole_batch(redis) -> None:
    source, target_a, target_b, group = _names()
    for i in range(2_500):  # more ids than one XACK inside the script takes (chunks of 1,000)
        await redis.xadd(source, {"intent": f"{i}"})
    entry_ids = await _read_all(redis, source, group, 2_500)
    assert len(entry_ids) == 2_500
    publication = streams.Publication(
        entries=[(target_a, {"intent": b'{"n":1}'}), (target_b, {"intent": b'{"n":2}'}), (target_a, {"intent": b"3"})],
    )
    await streams.publish_and_ack(redis, publication, source, group, entry_ids)
    assert [fields for _, fields in await redis.xrange(target_a)] == [{b"intent": b'{"n":1}'}, {b"intent": b"3"}]
    assert [fields for _, fields in await redis.xrange(target_b)] == [{b"intent": b'{"n":2}'}]
    assert (await redis.xpending(source, group))["pending"] == 0


async def test_publish_many_sends_every_message_in_order_in_one_call(redis) -> None:
    channels = [f"intent.{uuid.uuid4()}" for _ in range(2)]
    pubsub = redis.pubsub()
    await pubsub.subscribe(*channels)
    for _ in channels:
        await pubsub.get_message(timeout=1)  # the subscribe confirmations
    await redis.script_flush()  # and the script is loaded again when the server forgot it
    messages = [(channels[i % 2], f'{{"version":{i}}}'.encode()) for i in range(1, 301)]
    await streams.publish_many(redis, messages)
    await streams.publish_many(redis, [])
    received = []
    while len(received) < len(messages):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None, f"only {len(received)} of {len(messages)} messages arrived"
        received.append((message["channel"].decode(), message["data"]))
    assert received == messages
    await pubsub.aclose()


async def test_the_script_is_loaded_again_after_the_server_forgot_it(redis) -> None:
    source, target_a, _, group = _names()
    await redis.xadd(source, {"intent": b"x"})
    entry_ids = await _read_all(redis, source, group, 10)
    await redis.script_flush()
    publication = streams.Publication(entries=[(target_a, {"intent": b"y"})])
    await streams.publish_and_ack(redis, publication, source, group, entry_ids)
    assert await redis.xlen(target_a) == 1
    assert (await redis.xpending(source, group))["pending"] == 0


async def test_an_empty_batch_is_a_no_op(redis) -> None:
    source, _, _, group = _names()
    await redis.xgroup_create(source, group, id="0", mkstream=True)
    await streams.publish_and_ack(redis, streams.Publication(entries=[]), source, group, [])
    assert await redis.xlen(source) == 0


async def test_concurrent_batches_keep_every_entry(redis) -> None:
    source, target_a, _, group = _names()
    for i in range(50):  # at once: within the client's connection pool
        await redis.xadd(source, {"intent": f"{i}"})
    entry_ids = await _read_all(redis, source, group, 50)
    await asyncio.gather(
        *(
            streams.publish_and_ack(
                redis,
                streams.Publication(entries=[(target_a, {"intent": entry_id})]),
                source,
                group,
                [entry_id],
            )
            for entry_id in entry_ids
        )
    )
    assert sorted(fields[b"intent"] for _, fields in await redis.xrange(target_a)) == sorted(entry_ids)
    assert (await redis.xpending(source, group))["pending"] == 0


async def test_a_forgiven_delivery_does_not_count_and_the_entry_is_claimable_sooner(redis) -> None:
    source, _, _, group = _names()
    for i in range(3):
        await redis.xadd(source, {"intent": f"{i}"})
    mine, theirs, unread = await _read_all(redis, source, group, 3)
    # Claimed twice more (three deliveries); one entry belongs to another consumer; one was never read here.
    await redis.xclaim(source, group, "reader", min_idle_time=0, message_ids=[mine])
    await redis.xclaim(source, group, "reader", min_idle_time=0, message_ids=[mine])
    await redis.xclaim(source, group, "other", min_idle_time=0, message_ids=[theirs])
    await redis.xack(source, group, unread)

    await streams.forgive_deliveries(redis, source, group, "reader", [mine, theirs, unread], idle_ms=60_000)
    pending = {p.entry_id: p for p in await streams.pending_idle(redis, source, group, 0, 10)}
    assert set(pending) == {mine, theirs}
    assert (pending[mine].consumer, pending[mine].deliveries) == (b"reader", 2)
    assert pending[mine].idle_ms >= 60_000  # claimable now by any claimer waiting 60 s or less
    assert (pending[theirs].consumer, pending[theirs].deliveries) == (b"other", 2)  # not ours: untouched
    assert pending[theirs].idle_ms < 60_000
    # Never below zero: a first delivery forgiven leaves an entry that was, as it were, never delivered.
    for _ in range(3):
        await streams.forgive_deliveries(redis, source, group, "reader", [mine], idle_ms=0)
    assert [p.deliveries for p in await streams.pending_idle(redis, source, group, 0, 10) if p.entry_id == mine] == [0]
