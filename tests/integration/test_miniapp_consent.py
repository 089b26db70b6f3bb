"""A mini-app charge needs its user's consent (real PostgreSQL, Valkey, postgres ledger, the real gateway):
without an allowance it waits AWAITING_CONFIRMATION with nothing held and expires REJECTED
CONFIRMATION_EXPIRED; the payer's confirmation settles it, another user's is 404 like an unknown intent, a
key without `consent:write` is 403; an allowance lets charges within today's cap through, exactly under
concurrency, is given back once when a covered charge fails, and once revoked, charges wait again."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

from consumers import confirmations
from consumers.validation import reservation_of
from ledger import accounts
from pm.domain.intent import ErrorCode, State
from pm.store import allowances
from pm.store import intents as store
from tests.support.gateway_pipeline import GatewayPipeline, Key, error_of, gateway_on_pipeline
from tests.support.pipeline import transfers_in_ledger

_ids = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


def new_id() -> int:
    return next(_ids)


async def keys_of(world: GatewayPipeline, merchant_id: int) -> tuple[Key, Key]:
    """(the merchant backend's key, the app's edge key)."""
    merchant_key = await world.key("intents:write,intents:read", None, merchant_id=merchant_id)
    app_key = await world.key("balance:read,consent:write", "none")
    return merchant_key, app_key


async def charge(world: GatewayPipeline, merchant_key: Key, user_id: int, amount_minor: int) -> uuid.UUID:
    body = {"operation_type": "MINIAPP_CHARGE", "amount_minor": amount_minor, "currency": "THB"}
    response = await world.post_intent(merchant_key, body, user_id=user_id)
    assert response.status == 202, await response.text()
    return uuid.UUID((await response.json())["id"])


async def settled_or_waiting(
    world: GatewayPipeline, ids: list[uuid.UUID], timeout_s: float = 30.0
) -> dict[uuid.UUID, str]:
    """Each intent's state once every one is final and finished, or waiting for its user."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        rows = await world.pipeline.context.pool.fetch(
            "SELECT id, state, finished FROM pm.intent WHERE id = ANY($1::uuid[])", ids
        )
        states = {row["id"]: row["state"] for row in rows if row["finished"] or row["state"] == "AWAITING_CONFIRMATION"}
        if len(states) == len(ids):
            return states
        assert time.monotonic() < deadline_s, f"not settled or waiting in time: {rows}"
        await asyncio.sleep(0.05)


async def confirm(world: GatewayPipeline, key: Key, intent_id: uuid.UUID | str, user_id: int):
    return await world.send("POST", f"/intents/{intent_id}/confirm", key=key, user_id=user_id)


async def grant(world: GatewayPipeline, key: Key, user_id: int, merchant_id: int, daily_max_minor: int) -> None:
    body = json.dumps({"daily_max_minor": daily_max_minor, "currency": "THB"}).encode()
    response = await world.send("PUT", f"/api/pm/allowances/{merchant_id}", key=key, body=body, user_id=user_id)
    assert response.status == 200, await response.text()


async def used_minor(world: GatewayPipeline, user_id: int, merchant_id: int) -> int:
    used = await world.pipeline.context.pool.fetchval(
        "SELECT coalesce(sum(used_minor), 0) FROM pm.miniapp_allowance_usage WHERE user_id = $1 AND merchant_id = $2",
        user_id, merchant_id,
    )  # fmt: skip
    return int(used)


async def assert_clean_ledger(world: GatewayPipeline) -> None:
    report = await world.pipeline.check()
    assert report.ok, report.problems
    assert [t.posted_net for t in report.transit] == [0]
    assert all(t.debits_posted == t.credits_posted for t in report.ledgers.values())


async def test_a_charge_without_consent_never_moves_money_and_expires(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, merchant_id = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, 10_000)).id])
        merchant_key, app_key = await keys_of(world, merchant_id)
        intent_id = await charge(world, merchant_key, user, 2_500)
        assert await settled_or_waiting(world, [intent_id]) == {intent_id: "AWAITING_CONFIRMATION"}
        await asyncio.sleep(0.3)  # nothing downstream picks it up
        (intent,) = await pipeline.context.pool.fetch("SELECT state FROM pm.intent WHERE id = $1", intent_id)
        assert intent["state"] == "AWAITING_CONFIRMATION"
        assert await pipeline.balance(user) == (10_000, 0)  # nothing held
        assert await pipeline.states(intent_id) == ["CREATED", "AWAITING_CONFIRMATION"]

        assert await confirmations.expire_once(pipeline.context) == 0  # not yet due
        await pipeline.context.pool.execute(
            "UPDATE pm.intent SET updated_at = updated_at - interval '1 hour' WHERE id = $1", intent_id
        )
        assert await confirmations.expire_once(pipeline.context) == 1
        expired = (await pipeline.wait_finished([intent_id]))[intent_id]
        assert (expired.state, expired.error_code) == (State.REJECTED, ErrorCode.CONFIRMATION_EXPIRED)
        assert await transfers_in_ledger(pipeline, expired) == []
        assert await pipeline.balance(user) == (10_000, 0)
        merchant = await pipeline.context.ledger.lookup_accounts([accounts.merchant(merchant_id, "THB").id])
        assert all(a.credits_posted == a.debits_posted == a.debits_pending == 0 for a in merchant)
        webhook = await pipeline.context.pool.fetchval(
            "SELECT payload->>'state' FROM pm.outbox WHERE intent_id = $1 AND kind = 'merchant_webhook'", intent_id
        )
        assert webhook == "REJECTED"  # the merchant hears of the end
        assert await error_of(await confirm(world, app_key, intent_id, user)) == (409, "CONFIRMATION_EXPIRED")
        await assert_clean_ledger(world)


async def test_the_payer_confirms_and_the_charge_settles_another_user_gets_404(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, stranger, merchant_id = new_id(), new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, 10_000)).id])
        merchant_key, app_key = await keys_of(world, merchant_id)
        intent_id = await charge(world, merchant_key, user, 2_500)
        assert await settled_or_waiting(world, [intent_id]) == {intent_id: "AWAITING_CONFIRMATION"}

        by_stranger = await confirm(world, app_key, intent_id, stranger)
        unknown = await confirm(world, app_key, uuid.uuid4(), user)
        assert by_stranger.status == unknown.status == 404
        assert await by_stranger.json() == await unknown.json()
        reader = await world.key("balance:read", "none")
        assert await error_of(await confirm(world, reader, intent_id, user)) == (403, "FORBIDDEN")
        assert await error_of(await confirm(world, merchant_key, intent_id, user)) == (403, "FORBIDDEN")
        assert await pipeline.balance(user) == (10_000, 0)

        confirmed = await confirm(world, app_key, intent_id, user)
        assert confirmed.status == 200, await confirmed.text()
        settled = (await pipeline.wait_finished([intent_id]))[intent_id]
        assert settled.state == State.SETTLED
        assert (await pipeline.states(intent_id))[:3] == ["CREATED", "AWAITING_CONFIRMATION", "VALIDATED"]
        assert await pipeline.balance(user) == (10_000 - 2_500, 0)
        again = await confirm(world, app_key, intent_id, user)  # idempotent: the intent as it is now
        assert again.status == 200 and (await again.json())["state"] == "SETTLED"
        assert await pipeline.balance(user) == (10_000 - 2_500, 0)
        await assert_clean_ledger(world)


async def test_an_allowance_skips_confirmation_until_revoked(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, merchant_id = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, 10_000)).id])
        merchant_key, app_key = await keys_of(world, merchant_id)
        reader = await world.key("balance:read", "none")
        body = json.dumps({"daily_max_minor": 1_000, "currency": "THB"}).encode()
        refused = await world.send("PUT", f"/api/pm/allowances/{merchant_id}", key=reader, body=body, user_id=user)
        assert await error_of(refused) == (403, "FORBIDDEN")  # reading is not agreeing to pay
        await grant(world, app_key, user, merchant_id, 1_000)

        within = await charge(world, merchant_key, user, 600)
        assert await settled_or_waiting(world, [within]) == {within: "SETTLED"}
        assert "AWAITING_CONFIRMATION" not in await pipeline.states(within)
        over = await charge(world, merchant_key, user, 401)  # 600 + 401 > 1,000: asks the user
        assert await settled_or_waiting(world, [over]) == {over: "AWAITING_CONFIRMATION"}
        # A stale redelivery of the waiting charge to validation, once it would fit, takes no place.
        await grant(world, app_key, user, merchant_id, 1_001)
        waiting = await store.load_intent(pipeline.context.pool, over)
        assert waiting is not None
        assert await allowances.reserve(pipeline.context.pool, [reservation_of(waiting)]) == set()
        assert await used_minor(world, user, merchant_id) == 600
        listed = await world.send("GET", "/api/pm/allowances", key=app_key, user_id=user)
        [item] = (await listed.json())["items"]
        assert (item["merchant_id"], item["daily_max_minor"], item["used_today_minor"]) == (merchant_id, 1_001, 600)

        revoked = await world.send("DELETE", f"/api/pm/allowances/{merchant_id}", key=app_key, user_id=user)
        assert (await revoked.json()) == {"revoked": 1}
        small = await charge(world, merchant_key, user, 100)
        assert await settled_or_waiting(world, [small]) == {small: "AWAITING_CONFIRMATION"}
        assert await pipeline.balance(user) == (10_000 - 600, 0)
        await assert_clean_ledger(world)


async def test_an_allowance_caps_concurrent_charges_exactly(fresh_database, redis_url) -> None:
    charges_n, covered_k, amount_minor = 12, 4, 500
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, merchant_id = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, 100_000)).id])
        merchant_key, app_key = await keys_of(world, merchant_id)
        await grant(world, app_key, user, merchant_id, covered_k * amount_minor)
        ids = await asyncio.gather(*(charge(world, merchant_key, user, amount_minor) for _ in range(charges_n)))
        states = await settled_or_waiting(world, list(ids))
        assert sorted(states.values()).count("SETTLED") == covered_k
        assert sorted(states.values()).count("AWAITING_CONFIRMATION") == charges_n - covered_k
        assert await used_minor(world, user, merchant_id) == covered_k * amount_minor
        assert await pipeline.balance(user) == (100_000 - covered_k * amount_minor, 0)
        await assert_clean_ledger(world)


async def test_a_covered_charge_that_fails_gives_its_allowance_back_once(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        pipeline = world.pipeline
        user, merchant_id = new_id(), new_id()
        await pipeline.wait_finished([(await pipeline.fund(user, 300)).id])
        merchant_key, app_key = await keys_of(world, merchant_id)
        await grant(world, app_key, user, merchant_id, 1_000)
        too_much = await charge(world, merchant_key, user, 500)  # covered, then refused: only 300 on the account
        ended = (await pipeline.wait_finished([too_much]))[too_much]
        assert (ended.state, ended.error_code) == (State.REJECTED, ErrorCode.INSUFFICIENT_FUNDS)
        assert await used_minor(world, user, merchant_id) == 0  # given back by the history stage
        released_at = await pipeline.context.pool.fetchval(
            "SELECT released_at FROM pm.miniapp_allowance_reservation WHERE intent_id = $1", too_much
        )
        assert released_at is not None
        await allowances.release(pipeline.context.pool, [too_much])  # a replay gives nothing back again
        assert await used_minor(world, user, merchant_id) == 0
        # A redelivery to validation finds its reservation and reserves nothing more.
        assert await allowances.reserve(pipeline.context.pool, [reservation_of(ended)]) == {too_much}
        assert await used_minor(world, user, merchant_id) == 0
        fits = await charge(world, merchant_key, user, 300)
        assert await settled_or_waiting(world, [fits]) == {fits: "SETTLED"}
        assert await used_minor(world, user, merchant_id) == 300
        assert await pipeline.balance(user) == (0, 0)
        await assert_clean_ledger(world)


async def test_a_bad_allowance_is_refused_with_a_stable_code_and_nothing_written(fresh_database, redis_url) -> None:
    async with gateway_on_pipeline(fresh_database, redis_url) as world:
        user, merchant_id = new_id(), new_id()
        _, app_key = await keys_of(world, merchant_id)
        refusals = [
            (
                f"/api/pm/allowances/{merchant_id}",
                b'{"daily_max_minor": 0, "currency": "THB"}',
                422,
                "VALIDATION_FAILED",
            ),
            (
                f"/api/pm/allowances/{merchant_id}",
                b'{"daily_max_minor": 1.5, "currency": "THB"}',
                422,
                "VALIDATION_FAILED",
            ),
            (
                f"/api/pm/allowances/{merchant_id}",
                b'{"daily_max_minor": 100, "currency": "XXX"}',
                422,
                "UNSUPPORTED_CURRENCY",
            ),
            (
                f"/api/pm/allowances/{merchant_id}",
                b'{"daily_max_minor": 100, "currency": "THB", "x": 1}',
                422,
                "VALIDATION_FAILED",
            ),
            (f"/api/pm/allowances/{merchant_id}", b"not json", 400, "BAD_REQUEST"),
            (f"/api/pm/allowances/{merchant_id}?daily_max_minor=-5&currency=THB", b"", 422, "VALIDATION_FAILED"),
            (f"/api/pm/allowances/{merchant_id}?currency=THB", b"", 422, "VALIDATION_FAILED"),
            ("/api/pm/allowances/0", b'{"daily_max_minor": 100, "currency": "THB"}', 400, "BAD_REQUEST"),
        ]
        for path, body, status, code in refusals:
            response = await world.send("PUT", path, key=app_key, body=body, user_id=user)
            assert await error_of(response) == (status, code), (path, body)
        no_user = await world.send("GET", "/api/pm/allowances", key=app_key)
        assert await error_of(no_user) == (400, "BAD_REQUEST")
        rows = await world.pipeline.context.pool.fetchval(
            "SELECT count(*) FROM pm.miniapp_allowance WHERE user_id = $1", user
        )
        assert rows == 0
        # The edge's form (an empty body, the cap in the query) is the same grant.
        path = f"/api/pm/allowances/{merchant_id}?daily_max_minor=700&currency=THB"
        granted = await world.send("PUT", path, key=app_key, user_id=user)
        assert granted.status == 200 and (await granted.json())["daily_max_minor"] == 700
