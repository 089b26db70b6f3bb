"""Crash safety of the async channels: SIGKILL every settlement process (three), every history process
(two) and the outbox worker in the middle of 500 mixed intents (IPPS withdrawals with PRE and POST fees,
QP top-ups and mini-app charges through the PSP simulator), start new ones, and everything converges:
every intent terminal exactly once in the state its PSP behaviour decides, balances exact, transit back
to 0, no entry pending, every status message of every intent heard by an app listening on pub/sub (at
least once: every version, a repeat with the same event id), every user's history row written exactly
once and every intent `finished`, the limit places of the declined withdrawals given back (each user
holds exactly its settled ones), and every mini-app intent's webhook delivered (at least once, same
event id on a repeat)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import orjson
from aiohttp import web

from consumers import outbox
from ledger import accounts, open_ledger
from pm.client import PMClient
from pm.domain.limits import counter_keys_match
from pm.redis.wire import redis_from_url
from pm.store import allowances, keys
from tests.support.fleet import (
    MERCHANT_OPERATIONS,
    RunningFleet,
    free_port,
    psp_sim_environment,
    running_fleet,
)

INTENTS = 500
SECRET = "merchant-webhook-secret-crash-test"
PRE_FEE_MINOR, POST_FEE_MINOR = 25, 100  # on withdrawals: whole baht POST, so the behaviour digits stay
# (operation, amount_minor): the last two digits pick the simulator's behaviour; each ends as written.
KINDS = [
    ("IPPS_WITHDRAWAL", 1_000, "SETTLED"),  # 00: callback
    ("IPPS_WITHDRAWAL", 1_013, "FAILED"),  # 13: declined
    ("IPPS_WITHDRAWAL", 1_021, "SETTLED"),  # 21: no callback, polled
    ("IPPS_WITHDRAWAL", 1_022, "SETTLED"),  # 22: callback twice
    ("IPPS_WITHDRAWAL", 1_023, "SETTLED"),  # 23: success, then a stale PROCESSING event
    ("IPPS_WITHDRAWAL", 1_025, "SETTLED"),  # 25: wrongly signed, polled
    ("IPPS_WITHDRAWAL", 1_026, "SETTLED"),  # 26: no callback, status 503 twice before the truth
    ("QP_TOPUP", 2_000, "SETTLED"),
    ("QP_TOPUP", 2_022, "SETTLED"),
    ("QP_TOPUP", 2_023, "SETTLED"),
    ("QP_TOPUP", 2_025, "SETTLED"),
    ("MINIAPP_CHARGE", 3_000, "SETTLED"),
]

# (user, operation, amount_minor, expected final state) of each intent, in the order they are sent.
Plan = list[tuple[int, str, int, str]]


@dataclass(frozen=True)
class Parties:
    users: list[int]
    merchant_id: int
    merchant_key_id: str
    merchant_secret: str


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict]]]:
    """The merchant's receiver on a loopback port: its URL, and every webhook body it has received."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        yield f"http://127.0.0.1:{hook_port}/hook", received
    finally:
        await runner.cleanup()


async def set_up_parties(pm: RunningFleet, hook_url: str) -> Parties:
    """20 funded users, a merchant with a webhook to `hook_url` and a mini-app key, the payout fees, and a
    daily limit on withdrawals no intent reaches (so each one takes a place, and a declined one gives it back)."""
    ids = itertools.count(random.randrange(10**9, 2 * 10**9, 1_000))
    users = [next(ids) for _ in range(20)]
    merchant_id = next(ids)
    await outbox.set_webhook(pm.pool, merchant_id, hook_url, SECRET)
    merchant_key, merchant_secret = await keys.create_key(
        pm.pool, "crash-miniapp", "intents:write,intents:read", merchant_id, MERCHANT_OPERATIONS
    )
    for user in users:  # the users let the merchant charge them without asking (no confirmation here)
        await allowances.grant(pm.pool, user, merchant_id, "THB", 10**12)
    await pm.wait_finished([(await pm.fund(user, 1_000_000))["id"] for user in users])
    limit = {"operation_type": "IPPS_WITHDRAWAL", "tag": None, "period": "daily", "max_amount_minor": 10**10,
             "max_count": None, "currency": "THB"}  # fmt: skip
    assert (await pm.admin.request("POST", "/admin/limit-rules", body=limit, user_id=77)).body["version"] == 1
    fees = {"PRE": PRE_FEE_MINOR, "POST": POST_FEE_MINOR}
    await pm.add_fee_rules("payout", "IPPS_WITHDRAWAL", "IPPS_TRANSFER", fees)  # also waits for the rules
    return Parties(users, merchant_id, merchant_key.key_id, merchant_secret)


@contextlib.asynccontextmanager
async def status_messages_heard(pm: RunningFleet) -> AsyncIterator[list[dict]]:
    """The app: every status message on every intent's channel, as it arrives, until the block ends
    (and half a second more, for the last messages on their way)."""
    heard: list[dict] = []
    listener_redis = redis_from_url(pm.redis_url)
    pubsub = listener_redis.pubsub()
    await pubsub.psubscribe(pm.topology.status_channel.replace("{id}", "*"))

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                heard.append(orjson.loads(message["data"]))

    listening = asyncio.create_task(listen())
    try:
        yield heard
        await asyncio.sleep(0.5)  # the last messages are on their way
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await pubsub.aclose()
        await listener_redis.aclose()


async def send_killing_mid_run(pm: RunningFleet, parties: Parties, plan: Plan) -> list[str]:
    """Sends the plan's intents, 30 at a time; once a third are sent, SIGKILLs every settlement and history
    process and the outbox worker, waits a second with none of them at all, and starts new ones."""
    semaphore = asyncio.Semaphore(30)
    a_third_sent = asyncio.Event()
    sent = itertools.count(1)
    async with PMClient(pm.base_url, parties.merchant_key_id, parties.merchant_secret) as miniapp:

        async def send(user: int, operation: str, amount: int) -> str:
            client = miniapp if operation == "MINIAPP_CHARGE" else pm.app
            extra = {"destination_ref": "tok_crash"} if operation == "IPPS_WITHDRAWAL" else {}
            async with semaphore:
                intent = await client.create_intent(
                    operation_type=operation, amount_minor=amount, currency="THB", user_id=user, **extra
                )
            if next(sent) == INTENTS // 3:
                a_third_sent.set()
            return intent["id"]

        sending = [asyncio.create_task(send(user, op, amount)) for user, op, amount, _ in plan]
        await a_third_sent.wait()
        victims = [*pm.fleet.alive("settlement"), *pm.fleet.alive("history"), *pm.fleet.alive("outbox")]
        assert len(victims) == 6
        for victim in victims:
            await asyncio.to_thread(pm.fleet.kill, victim)
        await asyncio.sleep(1.0)  # entries pile up with no settlement consumer at all
        pm.fleet.start("settlement", 3)
        pm.fleet.start("history", 2)
        pm.fleet.start("outbox", 1)
        return await asyncio.gather(*sending)


def expected_money(plan: Plan, users: list[int]) -> tuple[dict[int, int], int, int, int, int]:
    """What the settled intents of the plan move: (each user's balance, the merchant's, the IPPS PSP's,
    the QP PSP's, the fees account's)."""
    expected = dict.fromkeys(users, 1_000_000)
    merchant_minor = psp_ipps = psp_qp = fees_minor = 0
    for user, operation, amount, state in plan:
        if state != "SETTLED":
            continue
        if operation == "IPPS_WITHDRAWAL":
            expected[user] -= amount + PRE_FEE_MINOR
            psp_ipps += amount - POST_FEE_MINOR
            fees_minor += PRE_FEE_MINOR + POST_FEE_MINOR
        elif operation == "QP_TOPUP":
            expected[user] += amount
            psp_qp += amount
        else:
            expected[user] -= amount
            merchant_minor += amount
    return expected, merchant_minor, psp_ipps, psp_qp, fees_minor


async def assert_the_money_is_exact(pm: RunningFleet, parties: Parties, plan: Plan) -> None:
    expected, merchant_minor, psp_ipps, psp_qp, fees_minor = expected_money(plan, parties.users)
    for user in parties.users:
        assert await pm.balance(user) == (expected[user], 0), user
    async with open_ledger(pm.database_url) as ledger:
        ipps, qp, merchant, fees = await ledger.lookup_accounts(
            [
                accounts.psp("IPPS_TRANSFER", "THB").id,
                accounts.psp("QP_TRANSFER", "THB").id,
                accounts.merchant(parties.merchant_id, "THB").id,
                accounts.fees("THB").id,
            ]
        )
    assert ipps.credits_posted - ipps.debits_posted == psp_ipps
    assert fees.credits_posted - fees.debits_posted == fees_minor
    assert qp.debits_posted - qp.credits_posted == psp_qp
    assert merchant.credits_posted - merchant.debits_posted == merchant_minor
    report = await pm.check()
    assert report.ok, report.problems
    assert (await pm.reconcile()).mismatches == []
    assert await pm.pending_entries() == 0


async def assert_every_webhook_delivered(pm: RunningFleet, received: list[dict], miniapp_ids: set[str]) -> None:
    """Every mini-app intent's final state reached its merchant, at least once."""
    deadline = asyncio.get_running_loop().time() + 60
    while {event["intent_id"] for event in received} < miniapp_ids:
        assert asyncio.get_running_loop().time() < deadline, "webhooks missing after the outbox restart"
        await asyncio.sleep(0.5)
    by_event: dict[str, set[str]] = {}
    for event in received:
        by_event.setdefault(event["event_id"], set()).add(event["intent_id"])
    assert all(len(intents) == 1 for intents in by_event.values())  # a repeat keeps its event id
    # A delivery is marked after the receiver's 2xx: the last marks may trail what was received.
    undelivered_sql = "SELECT count(*) FROM pm.outbox WHERE delivered_at IS NULL"
    while (undelivered := await pm.pool.fetchval(undelivered_sql)) != 0:
        assert asyncio.get_running_loop().time() < deadline, f"{undelivered} outbox rows never delivered"
        await asyncio.sleep(0.2)


def assert_every_version_heard(heard: list[dict], intent_ids: list[str], finished: dict[str, asyncpg.Record]) -> None:
    """The app heard every transition of every intent (the outbox worker was killed mid-run: some
    messages came twice, with the same event id)."""
    versions: dict[str, set[int]] = {}
    event_ids: dict[str, tuple[str, int]] = {}
    for message in heard:
        versions.setdefault(message["intent_id"], set()).add(message["version"])
        key = (message["intent_id"], message["version"])
        assert event_ids.setdefault(message["event_id"], key) == key
    for intent_id in intent_ids:
        assert versions.get(intent_id) == set(range(1, finished[intent_id]["version"] + 1)), intent_id


async def assert_each_history_row_once(pm: RunningFleet, intent_ids: list[str], plan: Plan) -> None:
    history = await pm.pool.fetch(
        "SELECT intent_id::text AS intent_id, user_id, direction, amount_minor FROM pm.history"
        " WHERE intent_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in intent_ids],
    )
    shown = {row["intent_id"]: (row["user_id"], row["direction"], row["amount_minor"]) for row in history}
    assert len(history) == len(shown) == INTENTS  # one row each: only the user is a party here
    for intent_id, (user, operation, amount, state) in zip(intent_ids, plan, strict=True):
        direction = "CREDIT" if operation == "QP_TOPUP" else "DEBIT"
        moved = amount + (PRE_FEE_MINOR if operation == "IPPS_WITHDRAWAL" else 0)
        assert shown[intent_id] == (user, direction, moved if state == "SETTLED" else 0), intent_id


async def assert_refused_places_given_back(pm: RunningFleet, parties: Parties, plan: Plan) -> None:
    """Each user's withdrawal limit counters hold exactly its settled withdrawals: the history stage gave
    back every declined one's place, once (a second release would take a settled one's away)."""
    client = redis_from_url(pm.redis_url)
    try:
        for user in parties.users:
            settled = [
                amount for u, op, amount, state in plan if u == user and op == "IPPS_WITHDRAWAL" and state == "SETTLED"
            ]
            keys = [key async for key in client.scan_iter(match=counter_keys_match(user), count=1_000)]
            places = [await client.hmget(key, "_amount", "_count") for key in keys]
            held = (sum(int(amount) for amount, _ in places), sum(int(count) for _, count in places))
            assert held == (sum(settled), len(settled)), user
    finally:
        await client.aclose()


async def test_sigkill_settlement_history_and_outbox_mid_run_converges(fresh_database, redis_url) -> None:
    sim_port = free_port()
    environment = psp_sim_environment(sim_port, delay_ms=200, hold_timeout_s=600, outcome_deadline_s=300)
    # The merchant's receiver below listens on loopback, where webhooks go only when allowed.
    environment["PM_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    async with (
        webhook_receiver() as (hook_url, received),
        running_fleet(
            fresh_database,
            redis_url,
            counts={"settlement": 3, "history": 2, "psp-sim": 1, "ipps-connector": 1, "qp-connector": 1, "outbox": 1},
            extra_environment=environment,
            stuck_after_s=1,
            claim_idle_ms=1_000,
        ) as pm,
    ):
        parties = await set_up_parties(pm, hook_url)
        async with status_messages_heard(pm) as heard:
            rng = random.Random(11)
            plan = [(rng.choice(parties.users), *rng.choice(KINDS)) for _ in range(INTENTS)]
            intent_ids = await send_killing_mid_run(pm, parties, plan)

            finished = await pm.wait_finished(intent_ids, timeout_s=240)
            states = [finished[i]["state"] for i in intent_ids]
            assert states == [expected for _, _, _, expected in plan]
            assert await pm.terminal_transitions(intent_ids) == dict.fromkeys(intent_ids, 1)
            await assert_the_money_is_exact(pm, parties, plan)
            miniapp_ids = {i for i, (_, op, _, _) in zip(intent_ids, plan, strict=True) if op == "MINIAPP_CHARGE"}
            await assert_every_webhook_delivered(pm, received, miniapp_ids)

        # The app heard every transition of every intent, and each user's history row is there once.
        assert_every_version_heard(heard, intent_ids, finished)
        await assert_each_history_row_once(pm, intent_ids, plan)
        await assert_refused_places_given_back(pm, parties, plan)
