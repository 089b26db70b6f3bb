"""Fee rules through the fleet (separate processes): a rule created with POST /admin/fee-rules while the
fees process runs takes effect without a restart; the quote matches what then settles; PRE and POST
fees land in fees:THB, the recipient gets the amount less the POST fee, transit returns to zero; and an
edit prices new intents with its new version while a settled intent keeps the one it recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid

import pytest

from ledger import accounts, open_ledger
from pm.config.constants import RULES_POLL_INTERVAL_S
from tests.support.fleet import running_fleet

_users = itertools.count(700_000)


def new_users(count: int) -> list[int]:
    return [next(_users) for _ in range(count)]


@pytest.fixture(scope="module")
async def fleet(fresh_database, redis_url):
    async with running_fleet(fresh_database, redis_url) as running:
        yield running


def rule(sender: int, kind: str, amount: str, **changes) -> dict:
    return {
        "name": f"{kind} for {sender}", "currency": "THB", "operation_type": "P2P_TRANSFER", "channel": None,
        "condition": f"sender_id == {sender}", "amount": amount, "kind": kind, "priority": 10, **changes,
    }  # fmt: skip


async def fees_balance(fleet) -> int:
    async with open_ledger(fleet.database_url) as ledger:
        found = await ledger.lookup_accounts([accounts.fees("THB").id])
    return found[0].credits_posted - found[0].debits_posted if found else 0


async def p2p(fleet, sender: int, recipient: int, amount_minor: int) -> dict:
    return await fleet.app.create_intent(
        operation_type="P2P_TRANSFER", amount_minor=amount_minor, currency="THB", user_id=sender,
        recipient_id=recipient, wait_s=10,
    )  # fmt: skip


async def recorded_rules(fleet, intent_id: str) -> list[dict]:
    value = await fleet.pool.fetchval("SELECT fee_rules FROM pm.intent WHERE id = $1", uuid.UUID(intent_id))
    return json.loads(value) if isinstance(value, str) else value


async def test_a_rule_created_through_the_api_applies_in_the_running_fees_process(fleet) -> None:
    alice, bob = new_users(2)
    await fleet.fund(alice, 100_000)
    before = await p2p(fleet, alice, bob, 1_000)  # the fees process has loaded its rules: none apply
    assert (before["state"], before["fee_pre_minor"], before["fee_post_minor"]) == ("SETTLED", 0, 0)
    fees_before = await fees_balance(fleet)

    pre = (await fleet.admin.request("POST", "/admin/fee-rules", body=rule(alice, "PRE", "amount / 100"))).body
    post = (await fleet.admin.request("POST", "/admin/fee-rules", body=rule(alice, "POST", "25"))).body
    # Every process re-reads the rule generation within this; the gateway that took the change at once.
    await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)
    body = {"operation_type": "P2P_TRANSFER", "amount_minor": 20_000, "currency": "THB", "recipient_id": bob}
    quote = (await fleet.app.request("POST", "/quote", body=body, user_id=alice)).body
    assert quote == {
        "fee_pre_minor": 200, "fee_post_minor": 25, "sender_debit_minor": 20_200, "recipient_credit_minor": 19_975,
        "rules": [
            {"id": pre["id"], "version": 1, "kind": "PRE", "fee_minor": 200},
            {"id": post["id"], "version": 1, "kind": "POST", "fee_minor": 25},
        ],
    }  # fmt: skip

    paid = await p2p(fleet, alice, bob, 20_000)
    assert (paid["state"], paid["fee_pre_minor"], paid["fee_post_minor"]) == ("SETTLED", 200, 25)
    assert await recorded_rules(fleet, paid["id"]) == quote["rules"]
    assert (await fleet.balance(alice))[0] == 100_000 - 1_000 - 20_200
    assert (await fleet.balance(bob))[0] == 1_000 + 19_975
    assert await fees_balance(fleet) == fees_before + 225

    edited = await fleet.admin.request("PUT", f"/admin/fee-rules/{post['id']}", body=rule(alice, "POST", "40"))
    assert edited.body["version"] == 2
    await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)
    again = await p2p(fleet, alice, bob, 20_000)
    assert (again["fee_pre_minor"], again["fee_post_minor"]) == (200, 40)
    assert [(r["id"], r["version"]) for r in await recorded_rules(fleet, again["id"])] == [
        (pre["id"], 1), (post["id"], 2),
    ]  # fmt: skip
    assert [r["version"] for r in await recorded_rules(fleet, paid["id"])] == [1, 1]  # the earlier one kept its own
    assert (await fleet.app.get_intent(paid["id"], user_id=alice))["fee_post_minor"] == 25

    await fleet.wait_finished([before["id"], paid["id"], again["id"]])
    report = await fleet.check()
    assert report.ok, report.problems
    assert (await fleet.reconcile()).mismatches == []
    assert [t.posted_net for t in report.transit] == [0]
