"""Proves, through the real gateway on a running pipeline, that an Idempotency-Key is the caller's per user
(issue 10, item 7): with one Auth Center key for every user, users A and B sending the same
Idempotency-Key each get an intent of their own, both settle and the balances and ledger are right; a
retry by either answers that user's own stored response; and once the record is past its retention
and purged, the key names a new intent."""

from __future__ import annotations

import random
import uuid

from consumers.poller import purge_once
from pm.domain.intent import State
from tests.support.gateway_pipeline import GatewayPipeline, error_of, gateway_on_pipeline

FUNDS_MINOR = 100_000
AUTH_CENTER_SCOPES = "intents:write,intents:read,balance:read"
AUTH_CENTER_OPERATIONS = "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP"
_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_id() -> int:
    return next(_ids)


def p2p(recipient: int, amount_minor: int) -> dict[str, object]:
    return {"operation_type": "P2P_TRANSFER", "amount_minor": amount_minor, "currency": "THB",
            "recipient_id": recipient}  # fmt: skip


async def _assert_clean_ledger(world: GatewayPipeline) -> None:
    report = await world.pipeline.check()
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0]
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())


async def test_two_users_of_one_key_may_send_the_same_idempotency_key(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        alice, bob, carol = new_id(), new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, FUNDS_MINOR)).id for user in (alice, bob)])
        auth_center = await world.key(AUTH_CENTER_SCOPES, AUTH_CENTER_OPERATIONS)
        shared_key = "checkout-1"  # what two apps may well both generate

        first = await world.post_intent(auth_center, p2p(carol, 10_000), user_id=alice, idempotency_key=shared_key)
        second = await world.post_intent(auth_center, p2p(carol, 25_000), user_id=bob, idempotency_key=shared_key)
        assert (first.status, second.status) == (202, 202), (await first.text(), await second.text())
        alice_answer, bob_answer = await first.json(), await second.json()
        assert alice_answer["id"] != bob_answer["id"]
        assert (alice_answer["sender_id"], bob_answer["sender_id"]) == (alice, bob)
        ids = [uuid.UUID(alice_answer["id"]), uuid.UUID(bob_answer["id"])]
        finished = await pipeline.wait_finished(ids)
        assert [finished[intent_id].state for intent_id in ids] == [State.SETTLED, State.SETTLED]
        assert await pipeline.balance(alice) == (FUNDS_MINOR - 10_000, 0)
        assert await pipeline.balance(bob) == (FUNDS_MINOR - 25_000, 0)
        assert await pipeline.balance(carol) == (35_000, 0)

        # Each user's retry answers that user's own first response, and creates nothing.
        alice_again = await world.post_intent(
            auth_center, p2p(carol, 10_000), user_id=alice, idempotency_key=shared_key
        )
        bob_again = await world.post_intent(auth_center, p2p(carol, 25_000), user_id=bob, idempotency_key=shared_key)
        assert (alice_again.status, await alice_again.json()) == (202, alice_answer)
        assert (bob_again.status, await bob_again.json()) == (202, bob_answer)
        assert alice_again.headers["Idempotent-Replayed"] == "true"
        # The same key for another request of the same user is still refused.
        changed = await world.post_intent(auth_center, p2p(carol, 99), user_id=alice, idempotency_key=shared_key)
        assert await error_of(changed) == (422, "IDEMPOTENCY_KEY_REUSED")
        assert await world.writes_by(auth_center) == (2, 2)
        assert await pipeline.balance(carol) == (35_000, 0)
        await _assert_clean_ledger(world)


async def test_after_its_retention_a_key_names_a_new_intent(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        alice, carol = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(alice, FUNDS_MINOR)).id])
        auth_center = await world.key(AUTH_CENTER_SCOPES, AUTH_CENTER_OPERATIONS)
        first = await world.post_intent(auth_center, p2p(carol, 1_000), user_id=alice, idempotency_key="daily")
        first_id = uuid.UUID((await first.json())["id"])
        await pipeline.wait_finished([first_id])
        # Within the retention the record holds; the purge keeps it.
        assert await purge_once(pipeline.context) == (0, 0, 0, 0)
        replay = await world.post_intent(auth_center, p2p(carol, 1_000), user_id=alice, idempotency_key="daily")
        assert (await replay.json())["id"] == str(first_id)
        # A day and a bit later (the record made to look older), the purge deletes it and the key is free.
        await pipeline.context.pool.execute(
            "UPDATE pm.idempotency SET created_at = created_at - make_interval(secs => $2) WHERE api_key_id = $1",
            auth_center.key_id,
            pipeline.context.idempotency_retention_s + 60,
        )
        purged = (await purge_once(pipeline.context)).idempotency
        assert purged == 1
        again = await world.post_intent(auth_center, p2p(carol, 1_000), user_id=alice, idempotency_key="daily")
        assert again.status == 202 and "Idempotent-Replayed" not in again.headers
        again_id = uuid.UUID((await again.json())["id"])
        assert again_id != first_id
        await pipeline.wait_finished([again_id])
        assert await pipeline.balance(carol) == (2_000, 0)
        await _assert_clean_ledger(world)
