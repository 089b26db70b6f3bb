"""The outbox rows on real PostgreSQL, Valkey and a real HTTP receiver: a mini-app intent's final
transition writes its webhook in the same statement (and only the final one); the worker signs and
delivers it, retries a failed delivery with backoff under the same event id, leases rows so two workers
never send one twice, gives up after the retry window, and `retry` brings a row back. A review flag
writes its event in the flag's statement, once, and the worker adds it to the review stream. A worker
stopped mid-delivery finishes it within its shutdown grace."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import orjson
import pytest
from aiohttp import web

from consumers import outbox
from pm.domain import psp_signing
from pm.domain.intent import OperationType, State, Transition
from pm.domain.webhook_policy import AllowedHosts
from pm.redis.wire import redis_from_url
from pm.store import intents as store
from pm.store import reviews
from pm.webhooks.client import WebhookClient
from tests.support.ports import free_port

SECRET = "merchant-webhook-secret-0123456789"
_merchants = itertools.count(900_001)


class Receiver:
    """A mini-app backend: answers with the queued statuses (then 200), records what it got."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.delay_s = 0.0  # how long it takes to answer

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay_s)
        return web.Response(status=self.answers.pop(0) if self.answers else 200)


# The test receiver listens on loopback, which webhooks may reach only when allowed (pm/domain/webhook_policy.py).
ALLOW_LOOPBACK = AllowedHosts.parse("127.0.0.1")


@pytest.fixture
async def receivers(redis, topology):
    """The worker's receivers, made with a webhook client per call (two workers: two clients)."""
    clients: list[WebhookClient] = []

    def make() -> outbox.Receivers:
        clients.append(outbox.webhook_client(ALLOW_LOOPBACK))
        return outbox.Receivers(clients[-1], redis, topology)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def receiver():
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    got.url = f"http://127.0.0.1:{port}/hook"  # type: ignore[attr-defined]
    yield got
    await runner.cleanup()


async def settled_charge(pool, merchant_id: int) -> uuid.UUID:
    (outcome,) = await store.create_intents(
        pool,
        [
            store.NewIntent(
                api_key_id="outbox-test", idempotency_key=uuid.uuid4().hex, request_hash=b"h",
                operation_type=OperationType.MINIAPP_CHARGE, amount_minor=4_200, currency="THB", sender_id=77,
                recipient_id=None, operator_id=None, merchant_id=merchant_id,
            )
        ],
    )  # fmt: skip
    assert outcome.created is not None
    states = [State.CREATED, State.VALIDATED, State.PRICED, State.CLEARED, State.AUTHORIZED, State.SETTLED]
    for expected, new in itertools.pairwise(states):
        channel = "MINIAPP" if new == State.VALIDATED else None
        transition = Transition(outcome.created.id, expected, new, channel=channel)
        (result,) = await store.apply_transitions(pool, [transition])
        assert result.applied
    return outcome.created.id


async def test_the_final_transition_writes_one_webhook_and_it_is_delivered_signed(pool, receiver, receivers) -> None:
    merchant = next(_merchants)
    intent_id = await settled_charge(pool, merchant)
    rows = await pool.fetch("SELECT version, payload FROM pm.outbox WHERE intent_id = $1", intent_id)
    assert [row["version"] for row in rows] == [6]  # SETTLED only, not the steps before it
    await outbox.set_webhook(pool, merchant, receiver.url, SECRET)
    session = receivers()
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(1, 0)
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 0)  # delivered: never again
    ((headers, body),) = receiver.got
    assert psp_signing.verify([SECRET], headers[outbox.SIGNATURE_HEADER], body, time.time())
    event = orjson.loads(body)
    assert event["event_id"] == headers[outbox.EVENT_ID_HEADER]
    assert (event["type"], event["intent_id"], event["version"], event["state"]) == (
        "intent.settled",
        str(intent_id),
        6,
        "SETTLED",
    )
    assert (event["merchant_id"], event["user_id"], event["amount_minor"]) == (merchant, 77, 4_200)


async def test_a_failed_delivery_is_retried_with_backoff_under_the_same_event_id(pool, receiver, receivers) -> None:
    merchant = next(_merchants)
    intent_id = await settled_charge(pool, merchant)
    await outbox.set_webhook(pool, merchant, receiver.url, SECRET)
    receiver.answers = [500]
    session = receivers()
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 1)
    row = await pool.fetchrow(
        "SELECT attempts, last_error, next_attempt_at - now() AS wait FROM pm.outbox WHERE intent_id = $1",
        intent_id,
    )
    assert (row["attempts"], row["last_error"]) == (1, "answered 500")
    assert 0 < row["wait"].total_seconds() <= outbox.backoff_s(1)
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 0)  # not due yet
    await pool.execute("UPDATE pm.outbox SET next_attempt_at = now() WHERE intent_id = $1", intent_id)
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(1, 0)
    first, second = (headers[outbox.EVENT_ID_HEADER] for headers, _ in receiver.got)
    assert first == second  # the receiver dedupes by it
    assert [outbox.backoff_s(n) for n in (1, 2, 3, 20)] == [1.0, 2.0, 4.0, outbox.BACKOFF_MAX_S]


async def test_no_url_waits_and_the_window_ends_in_giving_up_until_retried(pool, receiver, receivers) -> None:
    merchant = next(_merchants)
    intent_id = await settled_charge(pool, merchant)
    session = receivers()
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 1)
    row = await pool.fetchrow("SELECT id, last_error, gave_up_at FROM pm.outbox WHERE intent_id = $1", intent_id)
    assert "no webhook URL" in row["last_error"] and row["gave_up_at"] is None
    # A day later, still undeliverable: given up.
    await pool.execute(
        "UPDATE pm.outbox SET next_attempt_at = now(), created_at = now() - interval '25 hours' WHERE id = $1",
        row["id"],
    )
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 1)
    assert await pool.fetchval("SELECT gave_up_at IS NOT NULL FROM pm.outbox WHERE id = $1", row["id"])
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(0, 0)
    # The merchant registers; the operator retries it.
    await outbox.set_webhook(pool, merchant, receiver.url, SECRET)
    assert await outbox.retry(pool, row["id"])
    assert await outbox.deliver_once(pool, session) == outbox.RoundResult(1, 0)
    assert not await outbox.retry(pool, row["id"])  # delivered: nothing to retry
    listed = await outbox.list_rows(pool, undelivered_only=False, limit=10)
    assert any(r["id"] == row["id"] and r["delivered_at"] is not None for r in listed)


async def test_two_workers_never_send_the_same_row(pool, receiver, receivers) -> None:
    merchant = next(_merchants)
    await outbox.set_webhook(pool, merchant, receiver.url, SECRET)
    for _ in range(20):
        await settled_charge(pool, merchant)
    results = await asyncio.gather(outbox.deliver_once(pool, receivers()), outbox.deliver_once(pool, receivers()))
    assert sum(r.delivered for r in results) == 20
    event_ids = [headers[outbox.EVENT_ID_HEADER] for headers, _ in receiver.got]
    assert len(event_ids) == len(set(event_ids)) == 20


async def test_a_review_flag_writes_one_event_and_the_worker_adds_it_to_the_review_stream(
    pool, redis, topology, receivers
) -> None:
    intent_id = await settled_charge(pool, next(_merchants))
    assert await reviews.flag(pool, [intent_id], "the PSP paid out after the hold expired") == 1
    # flagged already for that reason: no second event
    assert await reviews.flag(pool, [intent_id], "the PSP paid out after the hold expired") == 0
    rows = await pool.fetch("SELECT kind, version, merchant_id FROM pm.outbox WHERE kind = 'review'")
    assert [(r["kind"], r["version"]) for r in rows] == [("review", 6)]
    # The review event goes out; the charge's webhook has no URL registered, so it waits for a retry.
    assert await outbox.deliver_once(pool, receivers()) == outbox.RoundResult(1, 1)
    assert await outbox.deliver_once(pool, receivers()) == outbox.RoundResult(0, 0)
    ((_, fields),) = await redis.xrange(topology.review_stream)
    event = orjson.loads(fields[b"event"])
    assert fields[b"event_id"].decode() == event["event_id"]
    assert (event["type"], event["intent_id"], event["version"], event["state"]) == (
        "intent.review_flagged",
        str(intent_id),
        6,
        "SETTLED",
    )
    assert event["reason"] == "the PSP paid out after the hold expired"
    listed = await outbox.list_rows(pool, undelivered_only=False, limit=10)
    assert [r["kind"] for r in listed if r["intent_id"] == intent_id] == ["review", "merchant_webhook"]


async def test_a_review_event_is_retried_while_redis_is_unreachable(pool, topology) -> None:
    intent_id = await settled_charge(pool, next(_merchants))
    await reviews.flag(pool, [intent_id], "late success")
    unreachable = redis_from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    webhooks = outbox.webhook_client(ALLOW_LOOPBACK)
    try:
        result = await outbox.deliver_once(pool, outbox.Receivers(webhooks, unreachable, topology))
    finally:
        await webhooks.close()
        await unreachable.aclose()
    assert result.failed >= 1
    row = await pool.fetchrow("SELECT attempts, delivered_at, last_error FROM pm.outbox WHERE kind = 'review'")
    assert (row["attempts"], row["delivered_at"]) == (1, None) and row["last_error"]


async def test_a_new_reason_for_a_flagged_intent_is_added_and_announced(pool) -> None:
    """Flagged already (the watch: no final answer in 24 h), then a graver reason comes (the PSP paid): the
    operator reads both, and the review stream hears of the second; the same reason again adds nothing."""
    intent_id = await settled_charge(pool, next(_merchants))
    assert await reviews.flag(pool, [intent_id], "no final answer") == 1
    assert await reviews.flag(pool, [intent_id], "the PSP paid") == 1
    assert await reviews.flag(pool, [intent_id], "the PSP paid") == 0
    assert await reviews.flag(pool, [intent_id], "no final answer") == 0
    row = await pool.fetchrow("SELECT needs_review, review_reason FROM pm.intent WHERE id = $1", intent_id)
    assert (row["needs_review"], row["review_reason"]) == (True, "no final answer; the PSP paid")
    reasons = await pool.fetch("SELECT payload->>'reason' AS reason FROM pm.outbox WHERE kind = 'review' ORDER BY id")
    assert [r["reason"] for r in reasons] == ["no final answer", "the PSP paid"]
    for n in range(60):  # a PSP inventing reasons: announced up to the bound per intent, then nothing more
        await reviews.flag(pool, [intent_id], f"reason number {n:02d}")
    reason = await pool.fetchval("SELECT review_reason FROM pm.intent WHERE id = $1", intent_id)
    assert reason.startswith("no final answer; the PSP paid; reason number 00") and reason.endswith("number 13")
    assert await reviews.flag(pool, [intent_id], "one more") == 0
    announced = await pool.fetchval(
        "SELECT count(*) FROM pm.outbox WHERE kind = 'review' AND intent_id = $1", intent_id
    )
    assert announced == reviews.REVIEW_EVENTS_PER_INTENT_MAX


async def test_a_reason_that_no_longer_fits_is_still_announced_once(pool) -> None:
    """A PSP's long mismatch reason fills the 500 characters: the graver reason after it (the PSP paid after
    the void) no longer fits in the text, but the review stream still hears of it, once."""
    intent_id = await settled_charge(pool, next(_merchants))
    assert await reviews.flag(pool, [intent_id], "x" * 600) == 1
    assert await reviews.flag(pool, [intent_id], "the PSP paid after the void") == 1
    assert await reviews.flag(pool, [intent_id], "the PSP paid after the void") == 0
    reason = await pool.fetchval("SELECT review_reason FROM pm.intent WHERE id = $1", intent_id)
    assert reason == "x" * reviews.REASON_LENGTH_MAX
    reasons = await pool.fetch("SELECT payload->>'reason' AS reason FROM pm.outbox WHERE kind = 'review' ORDER BY id")
    assert [r["reason"] for r in reasons] == ["x" * reviews.REASON_LENGTH_MAX, "the PSP paid after the void"]


async def test_flags_with_a_reason_each_are_one_statement_and_keep_each_reason(pool) -> None:
    """Settlement and the watch flag a batch's mismatched reports together: each intent gets its own reason,
    on the intent and in its review event, and a repeat adds nothing."""
    first, second = await settled_charge(pool, next(_merchants)), await settled_charge(pool, next(_merchants))
    reasons = {first: "the PSP reported 1 THB", second: "the PSP reported USD"}
    assert await reviews.flag_each(pool, reasons) == 2
    assert await reviews.flag_each(pool, reasons) == 0
    rows = await pool.fetch("SELECT id, review_reason FROM pm.intent WHERE id = ANY($1::uuid[])", list(reasons))
    assert {row["id"]: row["review_reason"] for row in rows} == reasons
    events = await pool.fetch("SELECT intent_id, payload->>'reason' AS reason FROM pm.outbox WHERE kind = 'review'")
    assert {row["intent_id"]: row["reason"] for row in events} == reasons


async def test_an_intent_cleared_by_an_operator_can_be_flagged_again(pool) -> None:
    intent_id = await settled_charge(pool, next(_merchants))
    assert await reviews.flag(pool, [intent_id], "first") == 1
    await pool.execute("UPDATE pm.intent SET needs_review = false WHERE id = $1", intent_id)  # README: cleared
    assert await reviews.flag(pool, [intent_id], "second") == 1
    reasons = await pool.fetch("SELECT payload->>'reason' AS reason FROM pm.outbox WHERE kind = 'review' ORDER BY id")
    assert [row["reason"] for row in reasons] == ["first", "second"]


async def test_a_worker_stopped_mid_delivery_finishes_it_within_the_grace(pool, redis, topology, receiver) -> None:
    """SIGTERM (a cancellation) while a webhook is on the wire: the round finishes and marks the row delivered,
    instead of leaving it leased for LEASE_S."""
    merchant = next(_merchants)
    intent_id = await settled_charge(pool, merchant)
    await outbox.set_webhook(pool, merchant, receiver.url, SECRET)
    receiver.delay_s = 1.0
    worker = asyncio.create_task(
        outbox.run_outbox(pool, redis, topology, allowed_hosts=ALLOW_LOOPBACK, shutdown_grace_s=5.0)
    )
    deadline = time.monotonic() + 10
    while not receiver.got:
        assert time.monotonic() < deadline, "the webhook was never sent"
        await asyncio.sleep(0.02)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(worker, 10)
    row = await pool.fetchrow("SELECT delivered_at, attempts FROM pm.outbox WHERE intent_id = $1", intent_id)
    assert row["delivered_at"] is not None and row["attempts"] == 1
