"""A user's balance (from the ledger) and history (from PostgreSQL): what the app shows.

    GET /api/pm/balance[?currency=USD]        -> {"currency", "available_minor", "pending_minor", "posted_minor"}
    GET /api/pm/history?limit=20&cursor=...   -> {"items": [...], "next_cursor": ... | null}, newest first

Without `?currency=` the balance is in the wallet's currency (PM_WALLET_CURRENCY, THB by default), as
the app asks for it; `?currency=` selects another supported one. The user is the signed X-User-Id (set
by the nginx gateway from a validated JWT). The history cursor is
opaque to callers: url-safe base64 of the last item's `created_at` and intent id.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth import acting_user
from gateway.errors import bad_request, json_response, validation_failed
from gateway.resources import DATABASE, LEDGER, SETTINGS
from ledger import accounts
from ledger.accounts import CURRENCY_LEDGER
from pm.domain.intent import ErrorCode
from pm.store import intents as store

HISTORY_PAGE_SIZE_DEFAULT = 20
CURSOR_LENGTH_MAX = 200


async def balance(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    assert user_id is not None
    # Absent: the wallet's currency. Present but empty (`?currency=`) names no currency: refused below.
    currency = request.query.get("currency", request.app[SETTINGS].wallet_currency)
    if currency not in CURRENCY_LEDGER:
        raise validation_failed(
            f"currency must be one of {', '.join(sorted(CURRENCY_LEDGER))}", ErrorCode.UNSUPPORTED_CURRENCY
        )
    found = await request.app[LEDGER].lookup_accounts([accounts.user(user_id, currency).id])
    if not found:
        # No account yet: the user has never received money in this currency.
        return json_response({"currency": currency, "available_minor": 0, "pending_minor": 0, "posted_minor": 0})
    account = found[0]
    posted_minor = account.credits_posted - account.debits_posted
    available_minor = posted_minor - account.debits_pending
    # The ledger forbids overdraft on user accounts (debits_must_not_exceed_credits).
    assert available_minor >= 0, (user_id, currency, available_minor)
    return json_response(
        {
            "currency": currency,
            "available_minor": available_minor,
            "pending_minor": account.debits_pending,
            "posted_minor": posted_minor,
        }
    )


async def history(request: web.Request) -> web.Response:
    user_id = acting_user(request, required=True)
    assert user_id is not None
    limit = _limit(request.query.get("limit"), request.app[SETTINGS].history_page_size_max)
    cursor_text = request.query.get("cursor")
    before = decode_cursor(cursor_text) if cursor_text else None
    # One row more than asked tells whether another page follows, without a second query.
    rows = await store.history_page(request.app[DATABASE], user_id, limit + 1, before)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["intent_id"]) if len(rows) > limit else None
    return json_response({"items": [_history_item(row) for row in page], "next_cursor": next_cursor})


def _limit(text: str | None, page_size_max: int) -> int:
    if text is None:
        return min(HISTORY_PAGE_SIZE_DEFAULT, page_size_max)
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise validation_failed("limit must be a positive integer")
    limit = int(text)
    if not 0 < limit <= page_size_max:
        raise validation_failed(f"limit must be from 1 to {page_size_max}")
    return limit


def encode_cursor(created_at: datetime, intent_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{intent_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    if len(text) > CURSOR_LENGTH_MAX:
        raise bad_request("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created_text, _, id_text = raw.partition("|")
        created_at = datetime.fromisoformat(created_text)
        intent_id = uuid.UUID(id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_request("malformed cursor") from None
    if created_at.tzinfo is None:
        raise bad_request("malformed cursor")
    return created_at, intent_id


def _history_item(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "intent_id": str(row["intent_id"]),
        "direction": row["direction"],
        "counterparty_id": row["counterparty_id"],
        "merchant_id": row["merchant_id"],
        "operation_type": row["operation_type"],
        "amount_minor": row["amount_minor"],
        "fee_minor": row["fee_minor"],
        "currency": row["currency"],
        "state": row["state"],
        "error_code": row["error_code"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat(),
    }
