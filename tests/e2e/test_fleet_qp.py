"""QP top-ups through the whole fleet, the QP connector group and the PSP simulator, one per way a PSP
behaves (the amount's last two digits pick it), with a PRE and a POST fee: every intent ends terminal
exactly once, the user gets exactly the paid top-ups less the POST fee, `psp:QP_TRANSFER:THB` owes what
the user paid (amount plus PRE fee), the fees account both fees, transit returns to 0, nothing is left
pending, the user's history shows each top-up once (failed ones with 0), and a payment that comes after
PM gave up is flagged for an operator, not credited."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from ledger import accounts, open_ledger
from pm.store import keys
from tests.support.fleet import APP_OPERATIONS, APP_SCOPES, RunningFleet, free_port, psp_sim_environment, running_fleet

PM = str(Path(sys.executable).parent / "pm")
REQUEST_VALID_S = 8  # PM_PSP_HOLD_TIMEOUT_S: how long the QR payment request is valid at QP
OUTCOME_DEADLINE_S = 4
# The user pays amount + PRE at QP: a whole baht, so the last two digits (the behaviour) stay as written.
PRE_FEE_MINOR, POST_FEE_MINOR = 100, 25

# amount_minor (last two digits = the simulator's behaviour) -> (final state, error code)
CASES = {
    100_000: ("SETTLED", None),  # 00: paid, one callback
    100_113: ("FAILED", "EXPIRED"),  # 13: the user never pays: PM gives up at its deadline
    100_221: ("SETTLED", None),  # 21: no callback: the poller re-drives, settlement asks the status
    100_322: ("SETTLED", None),  # 22: the same callback twice
    100_423: ("SETTLED", None),  # 23: paid, then a stale PENDING event
    100_524: ("FAILED", "EXPIRED"),  # 24: paid only after the request expired: flagged for review
    100_625: ("SETTLED", None),  # 25: callbacks signed with a wrong secret: PM pulls the status
    100_726: ("SETTLED", None),  # 26: no callback, status 503 twice before the truth
}


async def create_top_ups(pm: RunningFleet, user: int) -> dict[str, int]:
    """One QP top-up per case, to `user`: intent id -> amount."""
    created = {}
    for amount_minor in CASES:
        intent = await pm.app.create_intent(
            operation_type="QP_TOPUP", amount_minor=amount_minor, currency="THB", user_id=user
        )
        assert (intent["state"], intent["recipient_id"], intent["sender_id"]) == ("CREATED", user, None)
        created[intent["id"]] = amount_minor
    return created


async def assert_the_late_payment_is_flagged(pm: RunningFleet, late_id: str) -> None:
    """The late payment (24) arrives after PM gave up: flagged for review, never credited."""
    deadline_s = time.monotonic() + REQUEST_VALID_S + 10
    while not await pm.pool.fetchval("SELECT needs_review FROM pm.intent WHERE id = $1::uuid", late_id):
        assert time.monotonic() < deadline_s, "the late payment was never flagged for review"
        await asyncio.sleep(0.3)
    assert await pm.pool.fetchval("SELECT state FROM pm.intent WHERE id = $1::uuid", late_id) == "FAILED"


async def assert_the_top_up_money_is_exact(
    pm: RunningFleet, user: int, created: dict[str, int], fees_before: int
) -> int:
    """Every payment request existed at QP, the paid top-ups' money is exact to the minor unit and the
    ledger clean; returns what reached the wallet."""
    authorized = await pm.pool.fetchval(
        "SELECT count(DISTINCT intent_id) FROM pm.intent_event"
        " WHERE intent_id = ANY($1::uuid[]) AND state = 'AUTHORIZED'",
        list(created),
    )
    assert authorized == len(CASES)  # every payment request existed at QP before we waited on it

    settled = [amount for amount, (state, _) in CASES.items() if state == "SETTLED"]
    paid_minor = sum(settled) - POST_FEE_MINOR * len(settled)  # what reached the wallet
    assert await pm.balance(user) == (paid_minor, 0)
    async with open_ledger(pm.database_url) as ledger:
        (psp,) = await ledger.lookup_accounts([accounts.psp("QP_TRANSFER", "THB").id])
        (transit,) = await ledger.lookup_accounts([accounts.transit("THB").id])
        (fees,) = await ledger.lookup_accounts([accounts.fees("THB").id])
    assert (psp.debits_posted, psp.credits_posted) == (sum(settled) + PRE_FEE_MINOR * len(settled), 0)
    assert fees.credits_posted - fees.debits_posted - fees_before == (PRE_FEE_MINOR + POST_FEE_MINOR) * len(settled)
    assert (transit.debits_pending, transit.credits_pending) == (0, 0)
    assert transit.credits_posted == transit.debits_posted
    report = await pm.check()
    assert report.ok, report
    assert (await pm.reconcile()).mismatches == []
    assert await pm.pending_entries() == 0
    return paid_minor


async def assert_the_cli_follows_sends_to_settled(pm: RunningFleet, user: int, paid_minor: int) -> None:
    """The commands the README shows: a top-up and a withdrawal, followed to SETTLED (exit 0)."""
    key, secret = await keys.create_key(pm.pool, "e2e-cli", APP_SCOPES, operations=APP_OPERATIONS)
    environment = {
        **os.environ, "PM_GATEWAY_URL": pm.base_url, "PM_API_KEY_ID": key.key_id, "PM_API_KEY_SECRET": secret,
    }  # fmt: skip
    for command in (
        ["topup", "--to", str(user), "--amount", "20.00"],
        ["withdraw", "--from", str(user), "--amount", "5.00"],
    ):
        done = await asyncio.to_thread(
            subprocess.run, [PM, "send", *command], env=environment, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        shown = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("  v")]
        assert shown == ["CREATED", "VALIDATED", "PRICED", "CLEARED", "AUTHORIZED", "SETTLED"], done.stdout
    assert await pm.balance(user) == (paid_minor + 2_000 - POST_FEE_MINOR - 500, 0)


async def test_every_psp_behaviour_ends_once_with_the_right_money(fresh_database, redis_url) -> None:
    sim_port = free_port()
    environment = psp_sim_environment(
        sim_port, delay_ms=100, hold_timeout_s=REQUEST_VALID_S, outcome_deadline_s=OUTCOME_DEADLINE_S
    )
    async with running_fleet(
        fresh_database,
        redis_url,
        counts={"psp-sim": 1, "ipps-connector": 1, "qp-connector": 1},
        extra_environment=environment,
        stuck_after_s=1,
    ) as pm:
        user = random.randrange(10**9, 2 * 10**9)  # a user no other test touches
        fees = {"PRE": PRE_FEE_MINOR, "POST": POST_FEE_MINOR}
        await pm.add_fee_rules("top-up", "QP_TOPUP", "QP_TRANSFER", fees)
        fees_before = await pm.fees_posted()
        created = await create_top_ups(pm, user)
        finished = await pm.wait_finished(list(created), timeout_s=60)
        outcome = {created[i]: (row["state"], row["error_code"]) for i, row in finished.items()}
        assert outcome == CASES

        await assert_the_late_payment_is_flagged(pm, next(i for i, amount in created.items() if amount == 100_524))

        # The callbacks did the work where the simulator sends them (the poller's status pulls are only
        # the fallback): each recorded once per event id; 22's duplicate dropped, 23's stale event kept
        # (it changed nothing), 25's wrongly signed ones never recorded.
        recorded = await pm.callbacks_recorded(created)
        assert (recorded.get(0), recorded.get(22), recorded.get(23), recorded.get(25)) == (1, 1, 2, None), recorded

        assert await pm.terminal_transitions(list(created)) == dict.fromkeys(created, 1)
        paid_minor = await assert_the_top_up_money_is_exact(pm, user, created, fees_before)

        # What the user's app shows: each top-up once, net of the POST fee; the failed ones with 0.
        page = await pm.app.history(user_id=user, limit=20)
        shown = {item["intent_id"]: (item["direction"], item["amount_minor"], item["state"]) for item in page["items"]}
        assert shown == {
            intent_id: ("CREDIT", amount - POST_FEE_MINOR if CASES[amount][0] == "SETTLED" else 0, CASES[amount][0])
            for intent_id, amount in created.items()
        }

        await assert_the_cli_follows_sends_to_settled(pm, user, paid_minor)
