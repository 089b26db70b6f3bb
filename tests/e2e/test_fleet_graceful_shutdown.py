"""Graceful shutdown under load: SIGTERM one of two validation processes and one of two settlement
processes in the middle of 400 P2P transfers. Each exits 0 within PM_SHUTDOWN_GRACE_S (plus the time to
close its connections), and nothing it had read waits for claim_idle_ms: with claim_idle_ms and
stuck_after_s far beyond the test, every intent still ends (terminal exactly once) well within
claim_idle_ms, balances are exact, transit is 0, the ledger check is clean and no entry is pending."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import subprocess
import time

from tests.support.fleet import running_fleet

INTENTS = 400
CLAIM_IDLE_MS = 120_000
SHUTDOWN_GRACE_S = 5
EXIT_S_MAX = SHUTDOWN_GRACE_S + 10  # the grace, then closing pools and the interpreter's exit
FINISH_S_MAX = 30.0  # far below CLAIM_IDLE_MS: an entry left pending on a stopped consumer would miss it


def _wait_exit(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    started_s = time.monotonic()
    return process.wait(timeout=EXIT_S_MAX), time.monotonic() - started_s


async def test_sigterm_under_load_hands_back_and_exits_zero(fresh_database, redis_url) -> None:
    async with running_fleet(
        fresh_database,
        redis_url,
        counts={"validation": 2, "settlement": 2},
        extra_environment={"PM_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S)},
        claim_idle_ms=CLAIM_IDLE_MS,
        stuck_after_s=600,
    ) as pm:
        ids = itertools.count(random.randrange(10**9, 2 * 10**9, 1_000))
        users = [next(ids) for _ in range(20)]
        await pm.wait_finished([(await pm.fund(user, 1_000_000))["id"] for user in users])
        rng = random.Random(4)
        plan = [(*rng.sample(users, 2), rng.randrange(100, 5_000)) for _ in range(INTENTS)]
        semaphore = asyncio.Semaphore(30)
        a_third_sent = asyncio.Event()
        sent = itertools.count(1)

        async def send(user: int, recipient: int, amount: int) -> str:
            async with semaphore:
                intent = await pm.app.create_intent(
                    operation_type="P2P_TRANSFER", amount_minor=amount, currency="THB", user_id=user,
                    recipient_id=recipient,
                )  # fmt: skip
            if next(sent) == INTENTS // 3:
                a_third_sent.set()
            return intent["id"]

        sending = [asyncio.create_task(send(*entry)) for entry in plan]
        await a_third_sent.wait()
        victims = [pm.fleet.alive("validation")[0], pm.fleet.alive("settlement")[0]]
        for victim in victims:
            victim.send_signal(signal.SIGTERM)
        exits = await asyncio.gather(*(asyncio.to_thread(_wait_exit, victim) for victim in victims))
        logs = pm.fleet.logs("validation")[-2000:] + pm.fleet.logs("settlement")[-2000:]
        assert [code for code, _ in exits] == [0, 0], logs
        assert all(seconds <= EXIT_S_MAX for _, seconds in exits), exits
        stopped_s = time.monotonic()
        intent_ids = await asyncio.gather(*sending)

        await pm.wait_finished(intent_ids, timeout_s=FINISH_S_MAX - (time.monotonic() - stopped_s))
        assert await pm.terminal_transitions(intent_ids) == dict.fromkeys(intent_ids, 1)
        expected = dict.fromkeys(users, 1_000_000)
        for user, recipient, amount in plan:
            expected[user] -= amount
            expected[recipient] += amount
        for user in users:
            assert await pm.balance(user) == (expected[user], 0), user
        report = await pm.check()
        assert report.ok, report.problems
        assert (await pm.reconcile()).mismatches == []
        assert await pm.pending_entries() == 0
