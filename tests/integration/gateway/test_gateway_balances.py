"""GET /admin/balances on real PostgreSQL and the postgres ledger: after a snapshot, a user's row is what
GET /api/pm/balance answers (posted, pending, available) with the user named; pages by account id chain
through next_page without a row twice; bad parameters are refused with their codes (422 an unknown kind or
a bad limit, 400 a malformed page) and a key without the admin scope gets 403; a 128-bit balance is
answered exactly."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import tigerbeetle as tb

import channels
from consumers.balance_snapshot import take_snapshot
from gateway.resources import LEDGER
from ledger import accounts
from pm.domain.intent import Intent, OperationType
from pm.store import intents as store
from pm.store.balance_snapshots import ACCOUNT_ID_MAX, SnapshotRow, write_page
from tests.support.gateway import ADMIN, Gateway, Key, error_of, new_user


async def intent_with_channel(
    gateway: Gateway, operation_type: OperationType, amount_minor: int, sender: int | None, recipient: int, channel: str
) -> Intent:
    outcome = await store.create_intent(
        gateway.pool, api_key_id="test", idempotency_key=uuid.uuid4().hex, request_hash=b"test",
        operation_type=operation_type, amount_minor=amount_minor, currency="THB", sender_id=sender,
        recipient_id=recipient, operator_id=None, tags=[],
    )  # fmt: skip
    assert outcome.created is not None
    await gateway.pool.execute("UPDATE pm.intent SET channel = $2 WHERE id = $1", outcome.created.id, channel)
    loaded = await store.load_intent(gateway.pool, outcome.created.id)
    assert loaded is not None
    return loaded


async def funded_with_a_hold(gateway: Gateway, user: int, funded_minor: int, held_minor: int) -> None:
    """`user` credited `funded_minor` by an adjustment, then holding `held_minor` for a P2P in flight."""
    ledger = gateway.client.app[LEDGER]
    adjustment = channels.REGISTRY["ADJUSTMENT"]
    adjust, p2p_type = OperationType.ADMIN_ADJUSTMENT, OperationType.P2P_TRANSFER
    funding = await intent_with_channel(gateway, adjust, funded_minor, None, user, "ADJUSTMENT")
    payment = await intent_with_channel(gateway, p2p_type, held_minor, user, new_user(), "INTERNAL_P2P")
    p2p = channels.REGISTRY["INTERNAL_P2P"]
    needed = {a.id: a for a in [*adjustment.accounts(funding), *p2p.accounts(payment)]}
    await ledger.create_accounts([account.to_tigerbeetle() for account in needed.values()])
    for transfers in (adjustment.authorize(funding), adjustment.settle(funding), p2p.authorize(payment)):
        results = await ledger.create_transfers(transfers)
        assert {r.status for r in results} == {tb.CreateTransferStatus.CREATED}


async def all_pages(gateway: Gateway, key: Key, query: str) -> list[list[dict[str, Any]]]:
    pages, page = [], None
    for _ in range(1_000):
        suffix = f"&page={page}" if page else ""
        response = await gateway.send("GET", f"/admin/balances?{query}{suffix}", key=key)
        assert response.status == 200, await response.text()
        body = await response.json()
        pages.append(body["items"])
        page = body["next_page"]
        if page is None:
            return pages
    raise AssertionError("more than 1,000 pages")


async def test_a_users_row_is_what_the_balance_endpoint_answers(gateway: Gateway) -> None:
    user = new_user()
    await funded_with_a_hold(gateway, user, 40_000, 1_250)
    run = await take_snapshot(gateway.client.app[LEDGER], gateway.pool)
    assert run.complete and run.accounts >= 4

    admin = await gateway.key(*ADMIN)
    rows = [row for page in await all_pages(gateway, admin, "kind=user&limit=1000") for row in page]
    assert {row["kind"] for row in rows} == {"user"}
    mine = next(row for row in rows if row["account_id"] == str(accounts.user(user, "THB").id))
    async with gateway.pm_client(await gateway.key()) as client:
        balance = await client.balance("THB", user_id=user)
    assert balance == {"currency": "THB", "available_minor": 40_000 - 1_250, "pending_minor": 1_250,
                       "posted_minor": 40_000}  # fmt: skip
    assert {name: mine[name] for name in ("posted_minor", "pending_minor", "available_minor", "currency")} == balance
    assert (mine["name"], mine["user_id"], mine["merchant_id"]) == (f"user:{user}:THB", user, None)
    assert mine["ledger"] == 764 and mine["ledger_timestamp"] > 0 and mine["taken_at"]


async def test_pages_chain_by_account_id_without_a_row_twice(gateway: Gateway) -> None:
    for _ in range(3):
        await funded_with_a_hold(gateway, new_user(), 1_000, 10)
    await take_snapshot(gateway.client.app[LEDGER], gateway.pool)
    admin = await gateway.key(*ADMIN)

    whole = [row["account_id"] for page in await all_pages(gateway, admin, "limit=1000") for row in page]
    # Small pages, at most about a hundred of them: the session's database holds every earlier test's accounts.
    limit = max(3, len(whole) // 100 + 1)
    paged = await all_pages(gateway, admin, f"limit={limit}")
    assert len(paged) >= 3 and {len(page) for page in paged[:-1]} == {limit} and 0 < len(paged[-1]) <= limit
    ids = [row["account_id"] for page in paged for row in page]
    assert ids == whole and len(set(ids)) == len(ids) and ids == sorted(ids, key=int)
    kinds = {row["kind"] for page in paged for row in page}
    assert {"user", "transit", "adjustments"} <= kinds


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("kind=bogus", 422, "VALIDATION_FAILED"),
        ("kind=", 422, "VALIDATION_FAILED"),
        ("kind=USER", 422, "VALIDATION_FAILED"),
        ("limit=0", 422, "VALIDATION_FAILED"),
        ("limit=1001", 422, "VALIDATION_FAILED"),
        ("limit=abc", 422, "VALIDATION_FAILED"),
        ("limit=-1", 422, "VALIDATION_FAILED"),
        ("page=abc", 400, "BAD_REQUEST"),
        ("page=0", 400, "BAD_REQUEST"),
        ("page=01", 400, "BAD_REQUEST"),
        ("page=", 400, "BAD_REQUEST"),
        (f"page={ACCOUNT_ID_MAX + 1}", 400, "BAD_REQUEST"),
    ],
)
async def test_bad_parameters_are_refused_with_their_codes(
    gateway: Gateway, query: str, status: int, code: str
) -> None:
    admin = await gateway.key(*ADMIN)
    assert await error_of(await gateway.send("GET", f"/admin/balances?{query}", key=admin)) == (status, code)


async def test_the_last_account_id_is_a_page_and_a_key_without_admin_gets_403(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    last = await gateway.send("GET", f"/admin/balances?kind=user&page={ACCOUNT_ID_MAX}", key=admin)
    assert last.status == 200 and await last.json() == {"items": [], "next_page": None}
    refused = await gateway.send("GET", "/admin/balances", key=await gateway.key())
    assert await error_of(refused) == (403, "FORBIDDEN")


async def test_a_128_bit_balance_is_answered_exactly(gateway: Gateway) -> None:
    account_id = random.randrange(2**127, 2**128)  # no derived id of the shared ledger is this one
    credits_posted = 2**128 - 1
    row = SnapshotRow(
        account_id=account_id, ledger=764, currency="THB", code=3, kind="fees", name=None, user_id=None,
        merchant_id=None, debits_pending=1, debits_posted=0, credits_pending=0, credits_posted=credits_posted,
        ledger_timestamp=1,
    )  # fmt: skip
    await write_page(gateway.pool, [row])
    admin = await gateway.key(*ADMIN)
    response = await gateway.send("GET", f"/admin/balances?kind=fees&page={account_id - 1}&limit=1", key=admin)
    assert response.status == 200
    (item,) = (await response.json())["items"]
    assert (item["account_id"], item["posted_minor"], item["available_minor"]) == (
        str(account_id), credits_posted, credits_posted - 1,
    )  # fmt: skip
