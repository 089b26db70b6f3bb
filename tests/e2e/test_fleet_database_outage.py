"""The fleet as separate processes, each with its own pools, while PostgreSQL drops every connection
(issue 12, item 2): `pg_terminate_backend` of every PM backend, three times, during 1,000 P2P intents sent
by a signed client that retries 503 UNAVAILABLE (and 409 REQUEST_IN_FLIGHT) with the same
Idempotency-Key. No answer is a 500 or a 2xx for an intent not committed, every process's pools recover
within 10 s, every intent settles exactly once with exact balances, nothing is pending or dead-lettered
(with `max_deliveries: 1`: no delivery that failed because the database was down may count) and the
ledger is clean."""

from __future__ import annotations

import asyncio
import collections
import random
import re
import time
import uuid

import asyncpg

from pm.client import PMApiError, PMClient
from pm.redis.wire import redis_from_url
from tests.support.fleet import RunningFleet, running_fleet
from tests.support.outage import assert_balances_after, terminate_every_backend

INTENTS = 1_000
CALLERS = 32
USERS = 20  # senders; as many recipients
FUNDS_MINOR = 10_000_000
TERMINATE_AFTER_ACCEPTED = (100, 400, 700)
RECOVERY_S_MAX = 10.0
RETRYABLE = {(503, "UNAVAILABLE"), (409, "REQUEST_IN_FLIGHT")}
STAGE_TYPES = ("validation", "fees", "limits", "dispatch", "settlement")
OUTAGES = re.compile(r'^pm_stage_dependency_outages_total\{dependency="database",stage="[a-z-]+"\} (\S+)$', re.M)


async def _post_until_accepted(
    client: PMClient, sender: int, recipient: int, amount: int, answers: collections.Counter, deadline_s: float
) -> str:
    idempotency_key = uuid.uuid4().hex
    while True:
        try:
            intent = await client.create_intent(
                operation_type="P2P_TRANSFER", amount_minor=amount, currency="THB", user_id=sender,
                recipient_id=recipient, idempotency_key=idempotency_key,
            )  # fmt: skip
        except PMApiError as exc:
            answers[(exc.status, exc.code)] += 1
            assert (exc.status, exc.code) in RETRYABLE, exc
            assert time.monotonic() < deadline_s, f"not accepted in time: {answers}"
            await asyncio.sleep(0.1)
            continue
        answers[(202, "")] += 1
        return intent["id"]


async def _terminate_rounds(database_url: str, accepted: list[str], done: asyncio.Event) -> list[int]:
    admin = await asyncpg.connect(database_url, timeout=10)
    terminated = []
    try:
        for threshold in TERMINATE_AFTER_ACCEPTED:
            for _ in range(6_000):  # at most a minute
                if len(accepted) >= threshold or done.is_set():
                    break
                await asyncio.sleep(0.01)
            terminated.append(await terminate_every_backend(admin))
    finally:
        await admin.close(timeout=10)
    return terminated


async def _outages_counted(fleet: RunningFleet) -> float:
    """pm_stage_dependency_outages_total{dependency="database"}, summed over the stage processes."""
    total = 0.0
    for kind in STAGE_TYPES:
        total += sum(float(value) for value in OUTAGES.findall(await fleet.metrics(kind)))
    return total


async def _send_all(fleet: RunningFleet, plan: list[tuple[int, int, int]], answers: collections.Counter) -> list[str]:
    accepted: list[str] = []
    queue = iter(plan)
    deadline_s = time.monotonic() + 90

    async def caller() -> None:
        for sender, recipient, amount in queue:
            accepted.append(await _post_until_accepted(fleet.app, sender, recipient, amount, answers, deadline_s))

    done = asyncio.Event()
    terminator = asyncio.create_task(_terminate_rounds(fleet.database_url, accepted, done))
    try:
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
    finally:
        done.set()
        terminated = await terminator
    assert all(count > 0 for count in terminated), terminated
    return accepted


async def _ready_within(fleet: RunningFleet, seconds: float) -> None:
    started_s = time.monotonic()
    while True:
        try:
            await fleet.app.request("GET", "/readyz")
            return
        except PMApiError:
            assert time.monotonic() - started_s < seconds, "the gateway's pools did not recover in time"
            await asyncio.sleep(0.1)


async def test_terminated_connections_cost_the_fleet_retries_and_nothing_else(fresh_database, redis_url) -> None:
    async with running_fleet(fresh_database, redis_url, claim_idle_ms=10_000, max_deliveries=1) as fleet:
        base = random.randrange(10**12, 10**14, 10**6)
        senders, recipients = list(range(base, base + USERS)), list(range(base + USERS, base + 2 * USERS))
        await asyncio.gather(*(fleet.fund(user, FUNDS_MINOR) for user in senders))
        plan = [(random.choice(senders), random.choice(recipients), random.randint(100, 9_999)) for _ in range(INTENTS)]
        answers: collections.Counter[tuple[int, str]] = collections.Counter()

        accepted = await _send_all(fleet, plan, answers)
        await _ready_within(fleet, RECOVERY_S_MAX)
        finished = await fleet.wait_finished(accepted, timeout_s=90)
        assert len(set(accepted)) == INTENTS
        assert {row["state"] for row in finished.values()} == {"SETTLED"}
        assert set((await fleet.terminal_transitions(accepted)).values()) == {1}
        # Every 2xx named an intent that exists, and no retry made a second one.
        created = await fleet.pool.fetchval("SELECT count(*) FROM pm.intent WHERE operation_type = 'P2P_TRANSFER'")
        assert created == INTENTS
        await assert_balances_after(fleet.balance, plan, senders, recipients, FUNDS_MINOR)
        assert await fleet.pending_entries() == 0
        assert await fleet.pool.fetchval("SELECT count(*) FROM pm.intent WHERE needs_operator") == 0
        client = redis_from_url(fleet.redis_url)
        try:
            for stage in fleet.topology.stages.values():
                assert await client.xlen(stage.dead_letter_stream) == 0, stage.name
        finally:
            await client.aclose()
        report = await fleet.check()
        assert report.ok, report.problems
        assert (await fleet.reconcile()).mismatches == []
        assert [(t.posted_net, t.pending_net) for t in report.transit] == [(0, 0)]
        assert await _outages_counted(fleet) > 0, answers
