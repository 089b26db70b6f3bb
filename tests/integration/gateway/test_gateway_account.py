"""Balance and history for the app, through the Python client: the balance is the ledger's (posted,
pending, available; zeros before the first movement), the history pages newest first with an opaque
cursor until the last page, a balance asked without `?currency=` is the wallet's currency (THB, a
setting), and bad parameters are refused with their codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import tigerbeetle as tb

from gateway.resources import LEDGER
from ledger import accounts
from pm.client import PMApiError
from pm.domain.intent import OperationType
from pm.store import intents as store
from tests.support.gateway import Gateway, MakeGateway, error_of, new_user


async def test_balance_is_zero_before_the_first_movement(gateway: Gateway) -> None:
    async with gateway.pm_client(await gateway.key()) as client:
        assert await client.balance("THB", user_id=new_user()) == {
            "currency": "THB",
            "available_minor": 0,
            "pending_minor": 0,
            "posted_minor": 0,
        }


async def test_balance_reads_posted_and_pending_from_the_ledger(gateway: Gateway) -> None:
    user = new_user()
    ledger = gateway.client.app[LEDGER]
    source, wallet = accounts.adjustments("THB"), accounts.user(user, "THB")
    await ledger.create_accounts([source.to_tigerbeetle(), wallet.to_tigerbeetle()])
    thb = wallet.ledger
    results = await ledger.create_transfers(
        [
            tb.Transfer(
                id=tb.id(), debit_account_id=source.id, credit_account_id=wallet.id, amount=50_000, ledger=thb, code=900
            ),
            tb.Transfer(
                id=tb.id(),
                debit_account_id=wallet.id,
                credit_account_id=source.id,
                amount=1_500,
                ledger=thb,
                code=100,
                flags=tb.TransferFlags.PENDING,
                timeout=3600,
            ),
        ]
    )
    assert [result.status for result in results] == [tb.CreateTransferStatus.CREATED] * 2
    async with gateway.pm_client(await gateway.key()) as client:
        assert await client.balance("THB", user_id=user) == {
            "currency": "THB",
            "available_minor": 48_500,
            "pending_minor": 1_500,
            "posted_minor": 50_000,
        }
        assert await client.balance("USD", user_id=user) == {
            "currency": "USD",
            "available_minor": 0,
            "pending_minor": 0,
            "posted_minor": 0,
        }


async def test_balance_refuses_bad_parameters(gateway: Gateway) -> None:
    key = await gateway.key()
    async with gateway.pm_client(key) as client:
        with pytest.raises(PMApiError) as unknown:
            await client.balance("XXX", user_id=new_user())
        assert (unknown.value.status, unknown.value.code) == (422, "UNSUPPORTED_CURRENCY")
    missing_user = await gateway.send("GET", "/api/pm/balance?currency=THB", key=key)
    assert missing_user.status == 400
    for query in ("?currency=XXX", "?currency=", "?currency=thb"):
        refused = await gateway.send("GET", f"/api/pm/balance{query}", key=key, user_id=new_user())
        assert await error_of(refused) == (422, "UNSUPPORTED_CURRENCY"), query


async def _fund(gateway: Gateway, user: int, currency: str, amount_minor: int, held_minor: int = 0) -> None:
    """Credit the user's wallet from adjustments, and hold part of it, straight in the gateway's ledger."""
    ledger = gateway.client.app[LEDGER]
    source, wallet = accounts.adjustments(currency), accounts.user(user, currency)
    await ledger.create_accounts([source.to_tigerbeetle(), wallet.to_tigerbeetle()])
    transfers = [
        tb.Transfer(
            id=tb.id(), debit_account_id=source.id, credit_account_id=wallet.id, amount=amount_minor,
            ledger=wallet.ledger, code=900,
        )
    ]  # fmt: skip
    if held_minor:
        transfers.append(
            tb.Transfer(
                id=tb.id(), debit_account_id=wallet.id, credit_account_id=source.id, amount=held_minor,
                ledger=wallet.ledger, code=100, flags=tb.TransferFlags.PENDING, timeout=3600,
            )
        )  # fmt: skip
    results = await ledger.create_transfers(transfers)
    assert [result.status for result in results] == [tb.CreateTransferStatus.CREATED] * len(transfers)


async def test_balance_without_a_currency_is_the_wallet_currency_thb(gateway: Gateway) -> None:
    user = new_user()
    await _fund(gateway, user, "THB", 25_000, held_minor=4_000)
    await _fund(gateway, user, "USD", 700)
    key = await gateway.key()
    plain = await gateway.send("GET", "/api/pm/balance", key=key, user_id=user)
    thb = await gateway.send("GET", "/api/pm/balance?currency=THB", key=key, user_id=user)
    assert (plain.status, thb.status) == (200, 200)
    expected = {"currency": "THB", "available_minor": 21_000, "pending_minor": 4_000, "posted_minor": 25_000}
    assert await plain.json() == await thb.json() == expected
    async with gateway.pm_client(key) as client:
        assert await client.balance(user_id=user) == expected
        assert (await client.balance("USD", user_id=user))["posted_minor"] == 700  # ?currency= still selects


async def test_balance_without_a_currency_follows_the_wallet_currency_setting(make_gateway: MakeGateway) -> None:
    async with make_gateway(wallet_currency="USD") as usd_wallet:
        user = new_user()
        await _fund(usd_wallet, user, "USD", 1_234)
        async with usd_wallet.pm_client(await usd_wallet.key()) as client:
            assert await client.balance(user_id=user) == {
                "currency": "USD", "available_minor": 1_234, "pending_minor": 0, "posted_minor": 1_234,
            }  # fmt: skip
            assert (await client.balance("THB", user_id=user))["posted_minor"] == 0


async def _history_rows(gateway: Gateway, user: int, count: int) -> list[uuid.UUID]:
    """`count` finished intents in the user's history, one minute apart, oldest first."""
    ids = []
    started = datetime.now(UTC) - timedelta(hours=1)
    for index in range(count):
        outcome = await store.create_intent(
            gateway.pool,
            api_key_id="history-test",
            idempotency_key=uuid.uuid4().hex,
            request_hash=b"h",
            operation_type=OperationType.ADMIN_ADJUSTMENT,
            amount_minor=1_000 + index,
            currency="THB",
            sender_id=None,
            recipient_id=user,
            operator_id=None,
            tags=[],
        )
        assert outcome.created is not None
        ids.append(outcome.created.id)
        await gateway.pool.execute(
            "INSERT INTO pm.history (user_id, intent_id, direction, counterparty_id, operation_type, amount_minor,"
            " fee_minor, currency, state, created_at, finished_at)"
            " VALUES ($1, $2, 'CREDIT', NULL, 'ADMIN_ADJUSTMENT', $3, 0, 'THB', 'SETTLED', $4, $4)",
            user,
            outcome.created.id,
            1_000 + index,
            started + timedelta(minutes=index),
        )
    return ids


async def test_history_pages_newest_first_until_the_last_page(gateway: Gateway) -> None:
    user = new_user()
    ids = await _history_rows(gateway, user, 5)
    seen: list[str] = []
    pages = 0
    async with gateway.pm_client(await gateway.key()) as client:
        cursor = None
        while True:
            page = await client.history(user_id=user, limit=2, cursor=cursor)
            pages += 1
            seen.extend(item["intent_id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        first = (await client.history(user_id=user))["items"][0]
        assert await client.history(user_id=new_user()) == {"items": [], "next_cursor": None}
    assert seen == [str(intent_id) for intent_id in reversed(ids)]
    assert pages == 3
    assert first["amount_minor"] == 1_004 and first["direction"] == "CREDIT" and first["state"] == "SETTLED"


async def test_history_page_size_is_bounded_by_the_setting(make_gateway: MakeGateway) -> None:
    async with make_gateway(history_page_size_max=3) as small:
        user = new_user()
        await _history_rows(small, user, 4)
        async with small.pm_client(await small.key()) as client:
            page = await client.history(user_id=user, limit=3)
            assert len(page["items"]) == 3 and page["next_cursor"] is not None
            for limit in (4, 0):
                with pytest.raises(PMApiError) as refused:
                    await client.history(user_id=user, limit=limit)
                assert (refused.value.status, refused.value.code) == (422, "VALIDATION_FAILED")
            with pytest.raises(PMApiError) as bad_cursor:
                await client.history(user_id=user, cursor="bm90LWEtY3Vyc29y")
            assert (bad_cursor.value.status, bad_cursor.value.code) == (400, "BAD_REQUEST")


async def test_the_openapi_document_says_the_balance_currency_is_optional(gateway: Gateway) -> None:
    document = await (await gateway.raw("GET", "/openapi.json")).json()
    [currency] = [p for p in document["paths"]["/api/pm/balance"]["get"]["parameters"] if p["name"] == "currency"]
    assert currency["in"] == "query" and currency["required"] is False
    assert set(currency["schema"]["enum"]) == {"THB", "USD", "EUR"} and "PM_WALLET_CURRENCY" in currency["description"]
