"""IPPS withdrawals through the whole fleet and the PSP simulator, one per way a PSP behaves (the
amount's last two digits pick it): every intent ends terminal exactly once, the sender pays exactly
the settled payouts, `psp:IPPS_TRANSFER:THB` receives them, transit returns to 0, no entry is left
pending, and a success that comes after PM gave up is flagged for an operator, not settled."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from ledger import accounts, open_ledger
from tests.support.fleet import RunningFleet, free_port, psp_sim_environment, running_fleet

PM = str(Path(sys.executable).parent / "pm")
HOLD_TIMEOUT_S = 8
OUTCOME_DEADLINE_S = 4
SIM_DELAY_MS = 100

# amount_minor (last two digits = the simulator's behaviour) -> (final state, error code)
CASES = {
    50_000: ("SETTLED", None),  # 00: success, one callback
    50_113: ("FAILED", "PSP_DECLINED"),  # 13: declined
    50_221: ("SETTLED", None),  # 21: no callback: the poller re-drives, settlement asks the status
    50_322: ("SETTLED", None),  # 22: the same callback twice
    50_423: ("SETTLED", None),  # 23: success, then a stale PROCESSING event
    50_524: ("FAILED", "EXPIRED"),  # 24: success only after the hold expired: PM voids at its deadline
    50_625: ("SETTLED", None),  # 25: callbacks signed with a wrong secret: PM pulls the status
    50_726: ("SETTLED", None),  # 26: no callback, status 503 twice before the truth
}


async def create_withdrawals(pm: RunningFleet, sender: int) -> dict[str, int]:
    """One IPPS withdrawal per case, from `sender`: intent id -> amount."""
    created = {}
    for amount_minor in CASES:
        intent = await pm.app.create_intent(
            operation_type="IPPS_WITHDRAWAL", amount_minor=amount_minor, currency="THB", user_id=sender,
            destination_ref=f"tok_{amount_minor}",
        )  # fmt: skip
        assert (intent["state"], intent["destination_ref"], intent["sender_id"]) == (
            "CREATED",
            f"tok_{amount_minor}",
            sender,
        )
        created[intent["id"]] = amount_minor
    return created


async def assert_the_late_success_is_flagged(pm: RunningFleet, late_id: str) -> None:
    """The late success (24) arrives after PM voided: flagged for review, never settled, listed by
    `pm review list` and counted by the gateway."""
    deadline_s = time.monotonic() + HOLD_TIMEOUT_S + 10
    while not await pm.pool.fetchval("SELECT needs_review FROM pm.intent WHERE id = $1::uuid", late_id):
        assert time.monotonic() < deadline_s, "the late PSP success was never flagged for review"
        await asyncio.sleep(0.3)
    assert await pm.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1::uuid", late_id) == "FAILED"
    listed = await asyncio.to_thread(
        subprocess.run,
        [PM, "review", "list", "--json"],
        env={**os.environ, "PM_DATABASE_URL": pm.database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [late_id]
    async with aiohttp.ClientSession() as session, session.get(f"{pm.base_url}/metrics") as response:
        exposition = await response.text()
    assert "pm_reviews_flagged_total 1.0" in exposition  # the gateway flagged it, from the late callback


async def assert_the_payout_money_is_exact(pm: RunningFleet, sender: int, funded: int, fees_before: int) -> int:
    """The settled payouts' money, to the minor unit, and a clean ledger; returns what the PSP received."""
    settled = [amount for amount, (state, _) in CASES.items() if state == "SETTLED"]
    settled_minor = sum(settled)
    # The sender pays amount + PRE fee for each settled payout; the declined and expired paid nothing.
    assert await pm.balance(sender) == (funded - settled_minor - 25 * len(settled), 0)
    assert await pm.fees_posted() - fees_before == (25 + 100) * len(settled)
    settled_minor -= 100 * len(settled)  # what left to the PSP: amount - POST fee
    async with open_ledger(pm.database_url) as ledger:
        (psp,) = await ledger.lookup_accounts([accounts.psp("IPPS_TRANSFER", "THB").id])
        (transit,) = await ledger.lookup_accounts([accounts.transit("THB").id])
    assert (psp.credits_posted, psp.debits_posted) == (settled_minor, 0)
    assert (transit.debits_pending, transit.credits_pending) == (0, 0)
    assert transit.credits_posted == transit.debits_posted
    report = await pm.check()
    assert report.ok, report
    assert (await pm.reconcile()).mismatches == []
    assert await pm.pending_entries() == 0
    return settled_minor


async def assert_thai_qr_payments_take_the_channel(pm: RunningFleet, sender: int, psp_before_minor: int) -> None:
    """Thai QR payments take the same channel (the fee rules are for withdrawals only): one paid, one
    declined; the user's history shows both, the declined one with 0."""
    balance_before = (await pm.balance(sender))[0]
    qr = {}
    for amount_minor in (30_000, 30_013):
        intent = await pm.app.create_intent(
            operation_type="THAI_QR_PAY", amount_minor=amount_minor, currency="THB", user_id=sender,
            destination_ref=f"qr_{amount_minor}",
        )  # fmt: skip
        qr[intent["id"]] = amount_minor
    finished = await pm.wait_finished(list(qr), timeout_s=60)
    assert {qr[i]: (row["state"], row["error_code"]) for i, row in finished.items()} == {
        30_000: ("SETTLED", None),
        30_013: ("FAILED", "PSP_DECLINED"),
    }
    assert await pm.balance(sender) == (balance_before - 30_000, 0)
    async with open_ledger(pm.database_url) as ledger:
        (psp,) = await ledger.lookup_accounts([accounts.psp("IPPS_TRANSFER", "THB").id])
    assert (psp.credits_posted, psp.debits_posted) == (psp_before_minor + 30_000, 0)
    page = await pm.app.history(user_id=sender, limit=50)
    shown = {i["intent_id"]: (i["operation_type"], i["direction"], i["amount_minor"]) for i in page["items"]}
    assert [shown[i] for i in qr] == [("THAI_QR_PAY", "DEBIT", 30_000), ("THAI_QR_PAY", "DEBIT", 0)]
    report = await pm.check()
    assert report.ok, report
    assert (await pm.reconcile()).mismatches == []
    assert await pm.pending_entries() == 0


async def test_every_psp_behaviour_ends_once_with_the_right_money(fresh_database, redis_url) -> None:
    sim_port = free_port()
    environment = psp_sim_environment(
        sim_port, delay_ms=SIM_DELAY_MS, hold_timeout_s=HOLD_TIMEOUT_S, outcome_deadline_s=OUTCOME_DEADLINE_S
    )
    async with running_fleet(
        fresh_database,
        redis_url,
        counts={"psp-sim": 1, "ipps-connector": 1},
        extra_environment=environment,
        stuck_after_s=1,
    ) as pm:
        sender = random.randrange(10**9, 2 * 10**9)  # a user no other test touches
        funded = 1_000_000
        await pm.wait_finished([(await pm.fund(sender, funded))["id"]])
        # A PRE fee on payouts (held with the amount, kept only when the payout settles) and a POST fee
        # (taken from what leaves to the PSP: a whole baht, so the amount's last two digits, which pick
        # the simulator's behaviour, stay as written).
        await pm.add_fee_rules("payout", "IPPS_WITHDRAWAL", "IPPS_TRANSFER", {"PRE": 25, "POST": 100})
        fees_before = await pm.fees_posted()
        created = await create_withdrawals(pm, sender)
        finished = await pm.wait_finished(list(created), timeout_s=60)
        outcome = {created[i]: (row["state"], row["error_code"]) for i, row in finished.items()}
        assert outcome == CASES

        await assert_the_late_success_is_flagged(pm, next(i for i, amount in created.items() if amount == 50_524))

        # The callbacks did the work where the simulator sends them (the poller's status pulls are only
        # the fallback): each recorded once per event id; 22's duplicate dropped, 23's stale event kept
        # (it changed nothing), 25's wrongly signed ones never recorded.
        recorded = await pm.callbacks_recorded(created)
        assert (recorded.get(0), recorded.get(22), recorded.get(23), recorded.get(25)) == (1, 1, 2, None), recorded

        # Each intent made exactly one terminal transition.
        assert await pm.terminal_transitions(list(created)) == dict.fromkeys(created, 1)

        psp_minor = await assert_the_payout_money_is_exact(pm, sender, funded, fees_before)
        await assert_thai_qr_payments_take_the_channel(pm, sender, psp_minor)
