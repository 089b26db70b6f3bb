"""Redis losing all its data: the fleet's own Valkey is SIGKILLed while 500 P2P transfers, IPPS withdrawals
and QP top-ups are in flight, and an empty one starts on the same port. Every stage subscribes again (its
group was gone; the poller is paused meanwhile, so the stages must recreate it alone), the status poller
notices the missing data marker and re-drives every unfinished intent from PostgreSQL at once
(stuck_after_s is 300 s: the periodic re-drive cannot be what saves them), and within 60 s of the restart
every intent is terminal exactly once in the state its kind decides, balances are exact, transit is 0,
the ledger check is clean and no entry is pending."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
import uuid
from pathlib import Path

import aiohttp

from pm.client import PMApiError
from tests.support.fleet import free_port, psp_sim_environment, running_fleet
from tests.support.valkey import KillableValkey

INTENTS = 500
RECOVERY_S_MAX = 60.0
SEND_ATTEMPTS_MAX = 20
# FastStream waits 5 s after a failed read before reading again: by then every stage has met NOGROUP.
NOGROUP_WAIT_S = 7.0
# (operation, amount_minor, final state): the IPPS amounts' last two digits pick the simulator's behaviour.
KINDS = [
    ("P2P_TRANSFER", 1_000, "SETTLED"),
    ("P2P_TRANSFER", 1_700, "SETTLED"),
    ("IPPS_WITHDRAWAL", 2_000, "SETTLED"),  # 00: callback
    ("IPPS_WITHDRAWAL", 2_013, "FAILED"),  # 13: declined
    ("QP_TOPUP", 3_000, "SETTLED"),
]


async def test_valkey_killed_and_restarted_empty_converges(fresh_database, tmp_path: Path) -> None:
    valkey = KillableValkey(tmp_path)
    valkey.start()
    sim_port = free_port()
    environment = psp_sim_environment(sim_port, delay_ms=200, hold_timeout_s=600, outcome_deadline_s=300)
    # PSP calls get the default 5 s, not the suite's 1 s: a simulator starved of CPU on a busy machine (both
    # fleets of a CI run's workers re-driving at once) once took longer than 1 s to answer nine submits, which
    # then waited for the periodic re-drive (300 s here): a PSP timeout, not the Redis loss under test.
    environment |= {"PM_PSP_REQUEST_TIMEOUT_S": "5", "PM_PSP_SUBMIT_DEADLINE_S": "295"}  # a submit ends by 300 s
    try:
        async with running_fleet(
            fresh_database,
            valkey.url,
            counts={"psp-sim": 1, "ipps-connector": 1, "qp-connector": 1},
            extra_environment=environment,
            # Far beyond the test: the recovery, not the periodic re-drive, must bring every intent back.
            # (So no payout without a callback here: behaviour 21 is settled by that periodic re-drive.)
            stuck_after_s=300,
        ) as pm:
            ids = itertools.count(random.randrange(10**9, 2 * 10**9, 1_000))
            users = [next(ids) for _ in range(20)]
            await pm.wait_finished([(await pm.fund(user, 1_000_000))["id"] for user in users])
            rng = random.Random(12)
            pairs = [rng.sample(users, 2) for _ in range(INTENTS)]  # (user, a P2P recipient other than the user)
            plan = [(user, recipient, *rng.choice(KINDS)) for user, recipient in pairs]
            a_third_sent = asyncio.Event()
            sending = _send_all(pm, plan, a_third_sent)
            await a_third_sent.wait()
            restarted_s = await _lose_redis_data(pm, valkey)
            intent_ids = await asyncio.gather(*sending)

            try:
                finished = await pm.wait_finished(
                    intent_ids, timeout_s=RECOVERY_S_MAX - (time.monotonic() - restarted_s)
                )
            except AssertionError as exc:
                logs = {t: pm.fleet.logs(t)[-3000:] for t in ("settlement", "ipps-connector", "gateway", "poller")}
                raise AssertionError(f"{exc}; not finished: {await _unfinished(pm, intent_ids)}; {logs}") from None
            assert [finished[i]["state"] for i in intent_ids] == [expected for *_, expected in plan]
            assert await pm.terminal_transitions(intent_ids) == dict.fromkeys(intent_ids, 1)
            for process_type in (
                "validation",
                "fees",
                "limits",
                "dispatch",
                "settlement",
                "history",
                "poller",
                "outbox",
            ):
                assert pm.fleet.alive(process_type), f"{process_type} exited:\n{pm.fleet.logs(process_type)[-2000:]}"
            await _assert_the_money_is_exact(pm, users, plan)
    finally:
        valkey.stop()


def _send_all(pm, plan: list[tuple], a_third_sent: asyncio.Event) -> list[asyncio.Task[str]]:
    """One task per planned intent, 30 at a time, each retried with its key while the gateway refuses;
    `a_third_sent` is set once a third of them are in."""
    semaphore = asyncio.Semaphore(30)
    sent = itertools.count(1)

    async def send(user: int, recipient: int, operation: str, amount: int) -> str:
        extra: dict = {"destination_ref": "tok_loss"} if operation == "IPPS_WITHDRAWAL" else {}
        if operation == "P2P_TRANSFER":
            extra["recipient_id"] = recipient
        key = uuid.uuid4().hex
        for attempt in range(SEND_ATTEMPTS_MAX):
            try:
                async with semaphore:
                    intent = await pm.app.create_intent(
                        operation_type=operation, amount_minor=amount, currency="THB", user_id=user,
                        idempotency_key=key, **extra,
                    )  # fmt: skip
                break
            except (PMApiError, aiohttp.ClientError):  # the gateway while Redis is away: retry, same key
                assert attempt < SEND_ATTEMPTS_MAX - 1, "the gateway refused an intent too often"
                await asyncio.sleep(0.5)
        if next(sent) == INTENTS // 3:
            a_third_sent.set()
        return intent["id"]

    return [asyncio.create_task(send(*entry[:4])) for entry in plan]


async def _lose_redis_data(pm, valkey: KillableValkey) -> float:
    """SIGKILL Valkey and start it empty on the same port, the poller paused across it; when it restarted."""
    # The poller is paused across the outage: the stages then meet the empty Redis before anyone
    # recreated their groups (NOGROUP), as when the poller is slow or down, and must cope alone.
    (poller,) = pm.fleet.alive("poller")
    poller.send_signal(signal.SIGSTOP)
    await asyncio.to_thread(valkey.kill)
    await asyncio.sleep(1.0)  # every client finds Redis gone
    await asyncio.to_thread(valkey.start)
    restarted_s = time.monotonic()
    await asyncio.sleep(NOGROUP_WAIT_S)
    poller.send_signal(signal.SIGCONT)
    return restarted_s


async def _assert_the_money_is_exact(pm, users: list[int], plan: list[tuple]) -> None:
    expected_balances = dict.fromkeys(users, 1_000_000)
    for user, recipient, operation, amount, state in plan:
        if state != "SETTLED":
            continue
        if operation == "P2P_TRANSFER":
            expected_balances[user] -= amount
            expected_balances[recipient] += amount
        elif operation == "IPPS_WITHDRAWAL":
            expected_balances[user] -= amount
        else:
            expected_balances[user] += amount
    for user in users:
        assert await pm.balance(user) == (expected_balances[user], 0), user
    report = await pm.check()
    assert report.ok, report.problems
    assert (await pm.reconcile()).mismatches == []
    assert await pm.pending_entries() == 0


async def _unfinished(pm, intent_ids: list[str]) -> list[dict]:
    """The intents still open, for the failure message: where each one stopped and when it was last driven."""
    rows = await pm.pool.fetch(
        "SELECT state, channel, created_at, updated_at, redriven_at, finished FROM pm.intent"
        " WHERE id = ANY($1::uuid[]) AND NOT finished ORDER BY created_at LIMIT 20",
        [uuid.UUID(i) for i in intent_ids],
    )
    return [dict(row) for row in rows]
