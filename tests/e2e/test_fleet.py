"""The whole fleet as separate processes (the Procfile's commands) through the signed gateway: a P2P
settles with the right balances, history and a clean ledger; insufficient funds hold nothing; replays
are idempotent; strangers get 404; and killing settlement processes with SIGKILL in the middle of
1,000 intents still ends every intent exactly once, with no money moved twice, and the poller's balance
snapshot then equals the ledger account by account (and GET /admin/balances every user's balance)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from typing import Any

import aiohttp
import pytest

from consumers.balance_snapshot import newest_transfer_timestamp
from ledger import accounts, open_ledger
from ledger.check import all_accounts
from pm.client import PMApiError, PMClient
from tests.support.fleet import RunningFleet, running_fleet

_users = itertools.count(500_000)


def new_users(count: int) -> list[int]:
    return [next(_users) for _ in range(count)]


@pytest.fixture(scope="module")
async def fleet(fresh_database, redis_url):
    async with running_fleet(fresh_database, redis_url) as running:
        yield running


async def test_p2p_settles_through_the_fleet(fleet) -> None:
    alice, bob = new_users(2)
    await fleet.fund(alice, 100_000)
    intent = await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=15_000, currency="THB", user_id=alice, recipient_id=bob,
        tags=["kyc_verified"], wait_s=10,
    )  # fmt: skip
    assert intent["state"] == "SETTLED" and intent["version"] == 6
    assert await fleet.app.balance("THB", user_id=alice) == {
        "currency": "THB", "available_minor": 85_000, "pending_minor": 0, "posted_minor": 85_000,
    }  # fmt: skip
    assert (await fleet.app.balance("THB", user_id=bob))["posted_minor"] == 15_000
    events = [event async for event in fleet.app.events(intent["id"], user_id=bob)]
    assert [e["state"] for e in events] == ["CREATED", "VALIDATED", "PRICED", "CLEARED", "AUTHORIZED", "SETTLED"]
    await fleet.wait_finished([intent["id"]])
    history = await fleet.app.history(user_id=alice)
    assert [(i["direction"], i["amount_minor"]) for i in history["items"]] == [("DEBIT", 15_000), ("CREDIT", 100_000)]
    report = await fleet.check()
    assert report.ok, report.problems
    assert (await fleet.reconcile()).mismatches == []


async def test_every_process_serves_its_metrics(fleet) -> None:
    alice, bob = new_users(2)
    await fleet.fund(alice, 1_000)
    await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=10, currency="THB", user_id=alice, recipient_id=bob, wait_s=10
    )
    settlement = await fleet.metrics("settlement")
    assert 'pm_intents_finished_total{state="SETTLED"}' in settlement
    assert 'pm_stage_messages_total{outcome="applied",stage="settlement"}' in settlement
    assert "pm_ledger_results_total" in settlement and "pm_stage_batch_seconds_bucket" in settlement
    for _ in range(50):  # the poller measures every second
        poller = await fleet.metrics("poller")
        if "pm_stream_backlog_entries{" in poller:
            break
        await asyncio.sleep(0.1)
    assert "pm_stream_pending_entries{" in poller and "pm_intents_open{" in poller
    async with aiohttp.ClientSession() as session, session.get(f"{fleet.base_url}/metrics") as response:
        assert "pm_http_requests_total" in await response.text()


async def test_insufficient_funds_is_rejected_with_nothing_held(fleet) -> None:
    alice, bob = new_users(2)
    await fleet.fund(alice, 1_000)
    intent = await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=5_000, currency="THB", user_id=alice, recipient_id=bob, wait_s=10
    )
    assert intent["state"] == "REJECTED"
    assert intent["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert await fleet.balance(alice) == (1_000, 0)
    assert await fleet.balance(bob) == (0, 0)


async def test_replay_and_conflicting_reuse_of_an_idempotency_key(fleet) -> None:
    alice, bob = new_users(2)
    await fleet.fund(alice, 10_000)
    key = uuid.uuid4().hex
    request = {"operation_type": "P2P_TRANSFER", "currency": "THB", "user_id": alice, "recipient_id": bob}
    first = await fleet.app.create_intent_answer(amount_minor=700, idempotency_key=key, **request)
    replay = await fleet.app.create_intent_answer(amount_minor=700, idempotency_key=key, **request)
    assert (first.status, replay.status) == (202, 202)
    assert replay.body == first.body
    with pytest.raises(PMApiError) as refused:
        await fleet.app.create_intent(amount_minor=701, idempotency_key=key, **request)
    assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
    await fleet.wait_finished([first.body["id"]])
    assert await fleet.balance(bob) == (700, 0)  # once, not twice


async def test_a_third_user_cannot_read_the_intent(fleet) -> None:
    alice, bob, eve = new_users(3)
    await fleet.fund(alice, 1_000)
    intent = await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=100, currency="THB", user_id=alice, recipient_id=bob
    )
    assert (await fleet.app.get_intent(intent["id"], user_id=bob))["id"] == intent["id"]
    with pytest.raises(PMApiError) as hidden:
        await fleet.app.get_intent(intent["id"], user_id=eve)
    assert (hidden.value.status, hidden.value.code) == (404, "NOT_FOUND")


async def test_a_wrong_secret_is_refused_and_writes_nothing(fleet) -> None:
    alice, bob = new_users(2)
    before = await fleet.pool.fetchval("SELECT count(*) FROM pm.intent")
    async with PMClient(fleet.base_url, fleet.app._key_id, "not-the-secret") as forger:
        with pytest.raises(PMApiError) as refused:
            await forger.create_intent(
                operation_type="P2P_TRANSFER", amount_minor=100, currency="THB", user_id=alice, recipient_id=bob
            )
    assert refused.value.status == 401
    assert await fleet.pool.fetchval("SELECT count(*) FROM pm.intent") == before


INTENTS = 1_000
USERS = 40
FUNDING_MINOR = 1_000_000


async def test_sigkill_settlement_processes_mid_run(fresh_database, redis_url) -> None:
    async with running_fleet(
        fresh_database, redis_url, counts={"gateway": 2, "settlement": 3, "dispatch": 2}, claim_idle_ms=1_000,
        extra_environment={"PM_BALANCE_SNAPSHOT_INTERVAL_S": "1"},
    ) as fleet:  # fmt: skip
        users = new_users(USERS)
        await asyncio.gather(*(fleet.fund(user, FUNDING_MINOR) for user in users))
        rng = random.Random(7)
        plan = []
        for _ in range(INTENTS):
            sender, recipient = rng.sample(users, 2)
            plan.append((sender, recipient, rng.randint(1, 5_000)))
        semaphore = asyncio.Semaphore(40)
        a_third_sent = asyncio.Event()
        sent = itertools.count(1)

        async def send(sender: int, recipient: int, amount: int) -> str:
            async with semaphore:
                intent = await fleet.app.create_intent(
                    operation_type="P2P_TRANSFER", amount_minor=amount, currency="THB",
                    user_id=sender, recipient_id=recipient,
                )  # fmt: skip
            if next(sent) == INTENTS // 3:
                a_third_sent.set()
            return intent["id"]

        sending = [asyncio.create_task(send(*p)) for p in plan]
        # Kill two of the three settlement processes while intents flow.
        await a_third_sent.wait()
        victims = fleet.fleet.alive("settlement")[:2]
        for victim in victims:
            await asyncio.to_thread(fleet.fleet.kill, victim)
        ids = await asyncio.gather(*sending)
        finished = await fleet.wait_finished(ids, timeout_s=180)

        assert {row["state"] for row in finished.values()} == {"SETTLED"}  # funds suffice for every payment
        terminal_events = await fleet.pool.fetch(
            "SELECT intent_id, count(*) AS n FROM pm.intent_event WHERE intent_id = ANY($1::uuid[])"
            " AND state = ANY(ARRAY['SETTLED','REJECTED','FAILED']) GROUP BY intent_id",
            [uuid.UUID(i) for i in ids],
        )
        assert len(terminal_events) == INTENTS and {row["n"] for row in terminal_events} == {1}
        expected = dict.fromkeys(users, FUNDING_MINOR)
        for sender, recipient, amount in plan:
            expected[sender] -= amount
            expected[recipient] += amount
        for user in users:
            assert await fleet.balance(user) == (expected[user], 0), user
        report = await fleet.check()
        assert report.ok, report.problems
        assert (await fleet.reconcile()).mismatches == []
        assert await fleet.pending_entries() == 0
        assert len(fleet.fleet.alive("gateway")) == 2  # two gateways share the port (SO_REUSEPORT)
        await assert_the_snapshot_equals_the_ledger(fleet, expected)


async def assert_the_snapshot_equals_the_ledger(fleet: RunningFleet, expected: dict[int, int]) -> None:
    """Once the poller's snapshot has read every account after the ledger's newest transfer: each row is
    its account's counters and balances, and GET /admin/balances?kind=user names each user with `expected`."""
    async with open_ledger(fleet.database_url) as ledger:
        newest = await newest_transfer_timestamp(ledger)
        ledger_accounts = {account.id: account for account in await all_accounts(ledger)}
    deadline = time.monotonic() + 30
    while True:
        rows = await fleet.pool.fetch("SELECT * FROM pm.account_balance_snapshot")
        if len(rows) == len(ledger_accounts) and min(row["ledger_timestamp"] for row in rows) >= newest:
            break
        assert time.monotonic() < deadline, "no snapshot of the whole ledger after its last transfer in 30 s"
        await asyncio.sleep(0.2)
    for row in rows:
        account = ledger_accounts[int(row["account_id"])]
        assert (row["debits_pending"], row["debits_posted"], row["credits_pending"], row["credits_posted"]) == (
            account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted,
        )  # fmt: skip
        assert row["posted_minor"] == account.credits_posted - account.debits_posted
        assert row["available_minor"] == row["posted_minor"] - account.debits_pending
    assert sum(row["posted_minor"] for row in rows) == 0  # debits = credits, read from the snapshot alone
    listed: dict[int, dict[str, Any]] = {}
    query = {"kind": "user", "limit": "7"}
    for _ in range(100):
        page = (await fleet.admin.request("GET", "/admin/balances", query=query)).body
        listed |= {item["user_id"]: item for item in page["items"]}
        if page["next_page"] is None:
            break
        query["page"] = page["next_page"]
    assert set(listed) == set(expected)
    for user, balance_minor in expected.items():
        item = listed[user]
        assert item["account_id"] == str(accounts.user(user, "THB").id)
        balances = (item["posted_minor"], item["pending_minor"], item["available_minor"])
        assert balances == (balance_minor, 0, balance_minor), user
