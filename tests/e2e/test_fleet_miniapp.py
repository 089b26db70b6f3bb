"""Mini-app payments through the fleet (separate processes) with a merchant-bound key: a charge moves the
user's amount plus its PRE fee to the merchant and the fees account, a credit moves the merchant's money to
another user, a credit beyond what the merchant holds is REJECTED INSUFFICIENT_FUNDS with nothing held;
the users' history shows their side only, transit returns to zero and debits equal credits. The first
charge is within the allowance its user granted the merchant; one beyond it waits, holding nothing,
until the user confirms it through the app's key."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import accounts, open_ledger
from pm.client import PMApiError, PMClient
from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.store import keys
from tests.support.fleet import APP_SCOPES, MERCHANT_OPERATIONS, running_fleet

_ids = itertools.count(900_000)
PM = str(Path(sys.executable).parent / "pm")


@pytest.fixture(scope="module")
async def fleet(fresh_database, redis_url):
    async with running_fleet(fresh_database, redis_url) as running:
        yield running


async def posted(fleet, account: accounts.NamedAccount) -> tuple[int, int]:
    async with open_ledger(fleet.database_url) as ledger:
        found = await ledger.lookup_accounts([account.id])
    return (found[0].credits_posted - found[0].debits_posted, found[0].debits_pending) if found else (0, 0)


async def test_a_charge_then_a_credit_settle_through_the_fleet(fleet) -> None:
    user, other, merchant_id = next(_ids), next(_ids), next(_ids)
    merchant = accounts.merchant(merchant_id, "THB")
    api_key, secret = await keys.create_key(
        fleet.pool, "e2e-miniapp", "intents:write,intents:read", merchant_id, MERCHANT_OPERATIONS
    )
    fee_rule = {
        "name": "mini-app charge fee", "currency": "THB", "operation_type": "MINIAPP_CHARGE", "channel": "MINIAPP",
        "condition": "true", "amount": "100", "kind": "PRE", "priority": 10,
    }  # fmt: skip
    await fleet.admin.request("POST", "/admin/fee-rules", body=fee_rule)
    await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)  # every fees process has re-read the rules
    await fleet.fund(user, 100_000)
    fees_before = (await posted(fleet, accounts.fees("THB")))[0]

    await fleet.app.grant_allowance(merchant_id, 30_000, "THB", user_id=user)
    async with PMClient(fleet.base_url, api_key.key_id, secret) as miniapp:
        charge = await miniapp.create_intent(
            operation_type="MINIAPP_CHARGE", amount_minor=30_000, currency="THB", user_id=user, wait_s=10
        )
        assert (charge["state"], charge["merchant_id"], charge["sender_id"]) == ("SETTLED", merchant_id, user)
        assert (charge["fee_pre_minor"], charge["fee_post_minor"]) == (100, 0)
        assert await fleet.balance(user) == (100_000 - 30_100, 0)
        assert await posted(fleet, merchant) == (30_000, 0)
        assert (await posted(fleet, accounts.fees("THB")))[0] == fees_before + 100

        credit = await miniapp.create_intent(
            operation_type="MINIAPP_CREDIT", amount_minor=12_000, currency="THB", user_id=other, wait_s=10
        )
        assert (credit["state"], credit["merchant_id"], credit["recipient_id"]) == ("SETTLED", merchant_id, other)
        assert await fleet.balance(other) == (12_000, 0)
        assert await posted(fleet, merchant) == (18_000, 0)

        too_much = await miniapp.create_intent(
            operation_type="MINIAPP_CREDIT", amount_minor=18_001, currency="THB", user_id=other, wait_s=10
        )
        assert (too_much["state"], too_much["error"]["code"]) == ("REJECTED", "INSUFFICIENT_FUNDS")
        assert await posted(fleet, merchant) == (18_000, 0)
        assert await fleet.balance(other) == (12_000, 0)

        await fleet.wait_finished([charge["id"], credit["id"], too_much["id"]])
        history = (await fleet.app.history(user_id=user))["items"]
        assert [(i["operation_type"], i["direction"], i["amount_minor"], i["merchant_id"]) for i in history] == [
            ("MINIAPP_CHARGE", "DEBIT", 30_100, merchant_id), ("ADMIN_ADJUSTMENT", "CREDIT", 100_000, None),
        ]  # fmt: skip
        # The refused credit is the merchant's business, not the user's: no row for it.
        received = (await fleet.app.history(user_id=other))["items"]
        assert [(i["operation_type"], i["direction"], i["amount_minor"], i["merchant_id"]) for i in received] == [
            ("MINIAPP_CREDIT", "CREDIT", 12_000, merchant_id)
        ]

        # Today's allowance is used up: the next charge waits for its user, holding nothing.
        waiting = await miniapp.create_intent(
            operation_type="MINIAPP_CHARGE", amount_minor=5_000, currency="THB", user_id=user, wait_s=1
        )
        assert waiting["state"] == "AWAITING_CONFIRMATION"
        assert await fleet.balance(user) == (100_000 - 30_100, 0)
        confirmed = await fleet.app.confirm_intent(waiting["id"], user_id=user)
        assert confirmed["state"] != "AWAITING_CONFIRMATION"
        assert (await fleet.wait_finished([waiting["id"]]))[waiting["id"]]["state"] == "SETTLED"
        assert await fleet.balance(user) == (100_000 - 30_100 - 5_100, 0)
        assert await posted(fleet, merchant) == (18_000 + 5_000, 0)
    report = await fleet.check()
    assert report.ok, report.problems
    assert (await fleet.reconcile()).mismatches == []
    assert [t.posted_net for t in report.transit] == [0]
    assert await fleet.pending_entries() == 0


async def test_refunds_of_a_charge_and_of_a_transfer_through_the_fleet(fleet) -> None:
    """Refunds (issue 13 part 4) as separate processes run them: the merchant refunds part of its charge,
    a transfer's recipient refunds all of it (part with `pm send refund`); money goes back exactly (the
    original's PRE fee kept), a refund past the original is 422, both users' history shows each refund."""
    user, friend, merchant_id = next(_ids), next(_ids), next(_ids)
    merchant = accounts.merchant(merchant_id, "THB")
    operations = MERCHANT_OPERATIONS + ",REFUND"
    merchant_key, merchant_secret = await keys.create_key(
        fleet.pool, "e2e-refunds", "intents:write,intents:read", merchant_id, operations
    )
    app_key, app_secret = await keys.create_key(fleet.pool, "e2e-refunds-app", APP_SCOPES, None, "P2P_TRANSFER,REFUND")
    await fleet.fund(user, 100_000)
    await fleet.app.grant_allowance(merchant_id, 20_000, "THB", user_id=user)  # the user's consent beforehand
    async with PMClient(fleet.base_url, merchant_key.key_id, merchant_secret) as miniapp:
        charge = await miniapp.create_intent(
            operation_type="MINIAPP_CHARGE", amount_minor=20_000, currency="THB", user_id=user, wait_s=10
        )
        assert charge["state"] == "SETTLED"
        charge_fee_minor = charge["fee_pre_minor"]  # the first test's rule, if it ran first: kept
        refund = await miniapp.create_intent(
            operation_type="REFUND", amount_minor=7_500, currency="THB", refund_of=charge["id"], wait_s=10
        )
        assert (refund["state"], refund["refund_of"], refund["recipient_id"]) == ("SETTLED", charge["id"], user)
        assert await posted(fleet, merchant) == (12_500, 0)
    async with PMClient(fleet.base_url, app_key.key_id, app_secret) as app:
        transfer = await app.create_intent(
            operation_type="P2P_TRANSFER", amount_minor=10_000, currency="THB", user_id=user, recipient_id=friend,
            wait_s=10,
        )  # fmt: skip
        assert transfer["state"] == "SETTLED"
        # The README's command, as the recipient: 40.00 of the 100.00, followed to SETTLED (exit 0).
        environment = {**os.environ, "PM_GATEWAY_URL": fleet.base_url, "PM_API_KEY_ID": app_key.key_id,
                       "PM_API_KEY_SECRET": app_secret}  # fmt: skip
        command = [PM, "send", "refund", "--of", transfer["id"], "--by", str(friend), "--amount", "40.00"]
        done = await asyncio.to_thread(
            subprocess.run, command, env=environment, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1].split()[1] == "SETTLED", done.stdout
        by_command = done.stdout.split()[1]  # "intent ID  4000 minor THB"
        back = await app.create_intent(
            operation_type="REFUND", amount_minor=6_000, currency="THB", user_id=friend, refund_of=transfer["id"],
            wait_s=10,
        )  # fmt: skip
        assert (back["state"], back["sender_id"], back["recipient_id"]) == ("SETTLED", friend, user)
        with pytest.raises(PMApiError) as refused:
            await app.create_intent(
                operation_type="REFUND", amount_minor=1, currency="THB", user_id=friend, refund_of=transfer["id"]
            )
        assert (refused.value.status, refused.value.code) == (422, "REFUND_EXCEEDS_ORIGINAL")
        assert await fleet.balance(user) == (100_000 - 20_000 - charge_fee_minor + 7_500 - 10_000 + 10_000, 0)
        assert await fleet.balance(friend) == (0, 0)
        await fleet.wait_finished([charge["id"], refund["id"], transfer["id"], by_command, back["id"]])
        mine = (await app.history(user_id=user))["items"]
        assert [(i["operation_type"], i["direction"], i["amount_minor"]) for i in mine[:5]] == [
            ("REFUND", "CREDIT", 6_000), ("REFUND", "CREDIT", 4_000), ("P2P_TRANSFER", "DEBIT", 10_000),
            ("REFUND", "CREDIT", 7_500),
            ("MINIAPP_CHARGE", "DEBIT", 20_000 + charge_fee_minor),
        ]  # fmt: skip
        theirs = (await app.history(user_id=friend))["items"]
        assert [(i["operation_type"], i["direction"]) for i in theirs] == [
            ("REFUND", "DEBIT"),
            ("REFUND", "DEBIT"),
            ("P2P_TRANSFER", "CREDIT"),
        ]
    report = await fleet.check()
    assert report.ok, report.problems
    assert (await fleet.reconcile()).mismatches == []
    assert [t.posted_net for t in report.transit] == [0]
