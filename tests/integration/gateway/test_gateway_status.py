"""Waiting for an intent's outcome through the one shared pub/sub connection: `Prefer: wait=N` answers
202 when nothing finishes the intent within N seconds and 200 (as read from PostgreSQL) when a stage
publishes a final state; the SSE stream replays transitions after Last-Event-ID, streams live ones,
fills gaps from PostgreSQL and ends after the final state; many waiters share one subscription; and
a graceful shutdown ends long waits and streams at once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from gateway.resources import STATUS_HUB
from pm.domain.intent import ErrorCode, Intent, State, advance, reject
from pm.store import intents as store
from tests.support.gateway import Gateway, MakeGateway, error_of, new_user, p2p_body

TO_SETTLED = (State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED, State.SETTLED)


async def fake_stage(gateway: Gateway, intent_id: uuid.UUID, *states: State, publish: bool = True) -> Intent:
    """Move the intent through `states` as the stages do (compare-and-set in PostgreSQL), and publish each
    transition as the outbox worker does (its event JSON; `publish=False`: a message lost on the way)."""
    intent = await store.load_intent(gateway.pool, intent_id)
    assert intent is not None
    for state in states:
        if state == State.REJECTED:
            transition = reject(intent, ErrorCode.LIMIT_EXCEEDED, "over the daily limit")
        else:
            transition = advance(intent, state)
        [result] = await store.apply_transitions(gateway.pool, [transition])
        assert result.applied
        intent = result.intent
        if publish:
            event = store.IntentEvent(
                intent.id, intent.version, intent.state, intent.error_code, intent.error_message, intent.updated_at
            )
            await gateway.redis.publish(gateway.topology.channel_for(intent_id), json.dumps(event.to_json()))
    return intent


async def next_entry_intent_id(gateway: Gateway, last_id: bytes = b"0") -> uuid.UUID:
    """Wait for the next entry on the test's first stream (as a stage would read it)."""
    entries = await gateway.redis.xread({gateway.topology.first_stage.stream: last_id}, count=1, block=5_000)
    [(_, [(_, fields)])] = entries
    return uuid.UUID(json.loads(fields[b"intent"])["id"])


async def test_prefer_wait_answers_202_when_nothing_finishes_the_intent(gateway: Gateway) -> None:
    key = await gateway.key()
    started_s = time.monotonic()
    response = await gateway.post_intent(key, p2p_body(new_user()), user_id=new_user(), headers={"Prefer": "wait=1"})
    assert response.status == 202
    assert time.monotonic() - started_s >= 1.0
    assert response.headers["Preference-Applied"] == "wait=1"
    assert (await response.json())["state"] == "CREATED"
    assert gateway.client.app[STATUS_HUB].channels == 0  # unsubscribed again


async def test_prefer_wait_is_capped_by_the_setting(make_gateway: MakeGateway) -> None:
    async with make_gateway(prefer_wait_s_max=1) as capped:
        key = await capped.key()
        started_s = time.monotonic()
        response = await capped.post_intent(
            key, p2p_body(new_user()), user_id=new_user(), headers={"Prefer": "respond-async, wait=30"}
        )
        assert response.status == 202 and response.headers["Preference-Applied"] == "wait=1"
        assert time.monotonic() - started_s < 5


async def test_prefer_wait_answers_200_with_the_final_intent_from_postgres(make_gateway: MakeGateway) -> None:
    async with make_gateway() as gateway:
        key = await gateway.key()
        sender, recipient = new_user(), new_user()

        async def stage() -> Intent:
            intent_id = await next_entry_intent_id(gateway)
            return await fake_stage(gateway, intent_id, *TO_SETTLED)

        stage_task = asyncio.create_task(stage())
        started_s = time.monotonic()
        response = await gateway.post_intent(
            key, p2p_body(recipient), user_id=sender, idempotency_key="wait-1", headers={"Prefer": "wait=5"}
        )
        settled = await stage_task
        assert response.status == 200, await response.text()
        assert time.monotonic() - started_s < 4
        answer = await response.json()
        assert answer == settled.to_json()
        assert (answer["state"], answer["version"]) == ("SETTLED", 6)
        # A replay answers as the request would have been answered without `Prefer: wait`: 202, CREATED.
        replay = await gateway.post_intent(key, p2p_body(recipient), user_id=sender, idempotency_key="wait-1")
        assert replay.status == 202
        assert (await replay.json())["state"] == "CREATED" and (await replay.json())["id"] == answer["id"]


async def test_events_replay_after_last_event_id_then_stream_live_until_final(gateway: Gateway) -> None:
    key = await gateway.key()
    sender, recipient = new_user(), new_user()
    created = await (await gateway.post_intent(key, p2p_body(recipient), user_id=sender)).json()
    intent_id = uuid.UUID(created["id"])
    await fake_stage(gateway, intent_id, State.VALIDATED, State.PRICED)

    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async with gateway.pm_client(key) as client:
            async for event in client.events(intent_id, user_id=recipient, after_version=1):
                received.append(event)
                if event["version"] == 3:
                    live.set()

    live = asyncio.Event()
    listener = asyncio.create_task(listen())
    await asyncio.wait_for(live.wait(), 5)
    await fake_stage(gateway, intent_id, State.CLEARED)
    # A transition whose publication is lost (v5), then one that is published (v6): the gap is read
    # from PostgreSQL.
    await fake_stage(gateway, intent_id, State.AUTHORIZED, publish=False)
    final = await fake_stage(gateway, intent_id, State.SETTLED)
    await asyncio.wait_for(listener, 5)  # the stream ends by itself after the final state

    assert [(event["version"], event["state"]) for event in received] == [
        (2, "VALIDATED"),
        (3, "PRICED"),
        (4, "CLEARED"),
        (5, "AUTHORIZED"),
        (6, "SETTLED"),
    ]
    replayed = [event.to_json() for event in await store.events_since(gateway.pool, intent_id, 1)]
    assert received == replayed  # live events look exactly like replayed ones
    assert final.state == State.SETTLED


async def test_events_of_a_final_intent_end_at_once_and_carry_ids(gateway: Gateway) -> None:
    key = await gateway.key()
    sender = new_user()
    created = await (await gateway.post_intent(key, p2p_body(new_user()), user_id=sender)).json()
    intent_id = uuid.UUID(created["id"])
    await fake_stage(gateway, intent_id, State.REJECTED)

    response = await gateway.send("GET", f"/intents/{intent_id}/events?after_version=0", key=key, user_id=sender)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    text = await asyncio.wait_for(response.text(), 5)
    assert [line for line in text.splitlines() if line.startswith("id:")] == ["id: 1", "id: 2"]
    assert '"error_code":"LIMIT_EXCEEDED"' in text

    caught_up = await gateway.send(
        "GET", f"/intents/{intent_id}/events", key=key, user_id=sender, headers={"Last-Event-ID": "2"}
    )
    assert "data:" not in await asyncio.wait_for(caught_up.text(), 5)


async def test_events_are_only_for_parties(gateway: Gateway) -> None:
    key = await gateway.key()
    created = await (await gateway.post_intent(key, p2p_body(new_user()), user_id=new_user())).json()
    response = await gateway.send("GET", f"/intents/{created['id']}/events", key=key, user_id=new_user())
    assert await error_of(response) == (404, "NOT_FOUND")
    bad_version = await gateway.send(
        "GET", f"/intents/{created['id']}/events?after_version=x", key=key, user_id=created["sender_id"]
    )
    assert await error_of(bad_version) == (400, "BAD_REQUEST")


async def test_waiters_of_one_channel_share_one_subscription(gateway: Gateway) -> None:
    hub = gateway.client.app[STATUS_HUB]
    channels = [gateway.topology.channel_for(uuid.uuid4()) for _ in range(20)]

    async def numsub(channel: str) -> int:
        [(_, count)] = await gateway.redis.pubsub_numsub(channel)
        return int(count)

    async with hub.subscribe(channels[0]) as first, hub.subscribe(channels[0]) as second:
        assert await numsub(channels[0]) == 1
        status = {"id": "x", "state": "VALIDATED", "version": 2}
        await gateway.redis.publish(channels[0], json.dumps(status))
        for subscription in (first, second):
            assert await subscription.wait(5)
            assert subscription.drain() == ([status], False)
    # Many channels at once: one connection, every SUBSCRIBE confirmed before the waiter goes on.
    async with asyncio.TaskGroup() as group:
        for channel in channels:
            group.create_task(_subscribed_and_counted(hub, channel, numsub))
    for _ in range(50):
        if all([await numsub(channel) == 0 for channel in channels]):
            break
        await asyncio.sleep(0.05)
    assert [await numsub(channel) for channel in channels] == [0] * len(channels)
    assert hub.channels == 0


async def _subscribed_and_counted(hub: Any, channel: str, numsub: Any) -> None:
    async with hub.subscribe(channel):
        assert await numsub(channel) == 1


async def test_shutdown_ends_open_event_streams_and_waits_at_once(make_gateway: MakeGateway) -> None:
    async with make_gateway() as gateway:
        key = await gateway.key()
        sender = new_user()
        created = await (await gateway.post_intent(key, p2p_body(new_user()), user_id=sender)).json()
        stream = await gateway.send("GET", f"/intents/{created['id']}/events", key=key, user_id=sender)
        assert stream.status == 200
        waiting = asyncio.create_task(
            gateway.post_intent(key, p2p_body(new_user()), user_id=sender, headers={"Prefer": "wait=10"})
        )
        await asyncio.sleep(0.2)
        started_s = time.monotonic()
        await gateway.client.server.runner.shutdown()  # what a graceful stop runs first (on_shutdown)
        answered = await asyncio.wait_for(waiting, 2)
        assert answered.status == 202
        assert "id: 1" in await asyncio.wait_for(stream.text(), 2)
        assert time.monotonic() - started_s < 2


async def test_open_event_streams_are_bounded_per_user_and_per_process(make_gateway: MakeGateway) -> None:
    """One caller cannot hold unbounded streams (each a socket, a subscription and a PostgreSQL read every
    ping): a third stream of one (key, user) is 429 RATE_LIMITED while two are open, another user's opens,
    the process's fourth is 503 OVERLOADED; a closed stream gives its slot back."""
    async with make_gateway(sse_streams_per_user_max=2, sse_streams_max=3) as gateway:
        key = await gateway.key()
        sender, other, third = new_user(), new_user(), new_user()
        created = await (await gateway.post_intent(key, p2p_body(other), user_id=sender)).json()
        path = f"/intents/{created['id']}/events"

        first = await gateway.send("GET", path, key=key, user_id=sender)
        second = await gateway.send("GET", path, key=key, user_id=sender)
        assert (first.status, second.status) == (200, 200)
        refused = await gateway.send("GET", path, key=key, user_id=sender)
        assert refused.status == 429, "a third stream of one user opened"  # before reading: an open one never ends
        assert await error_of(refused) == (429, "RATE_LIMITED") and refused.headers["Retry-After"] == "5"
        by_other = await gateway.send("GET", path, key=key, user_id=other)  # the recipient: a party too
        assert by_other.status == 200
        created_by_third = await (await gateway.post_intent(key, p2p_body(new_user()), user_id=third)).json()
        full = await gateway.send("GET", f"/intents/{created_by_third['id']}/events", key=key, user_id=third)
        assert full.status == 503, "a fourth stream of the process opened"
        assert await error_of(full) == (503, "OVERLOADED")

        first.close()  # the client leaves: its slot comes back once the stream notices
        deadline_s = time.monotonic() + 10
        while (again := await gateway.send("GET", path, key=key, user_id=sender)).status != 200:
            assert await error_of(again) == (429, "RATE_LIMITED")
            assert time.monotonic() < deadline_s, "a closed stream never gave its slot back"
            await asyncio.sleep(0.1)
        for response in (second, by_other, again):
            response.close()
