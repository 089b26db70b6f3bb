"""The balance snapshot, a page at a time (admin scope): what the status poller last read of every ledger
account (pm.account_balance_snapshot, consumers/balance_snapshot.py), without touching the ledger.

    GET /admin/balances?kind=user&limit=100&page=...
        -> {"items": [{"account_id", "name", "kind", "currency", "ledger", "code", "user_id", "merchant_id",
                       "posted_minor", "pending_minor", "available_minor", "debits_pending", "debits_posted",
                       "credits_pending", "credits_posted", "ledger_timestamp", "taken_at"}],
            "next_page": "..." | null}

Pages by account id; `page` is the `next_page` of the previous answer (null on the last page). `kind`
omitted: every kind. An unknown kind or a bad limit is 422 VALIDATION_FAILED, a malformed page 400
BAD_REQUEST, as for the other pages of the API. Amounts are JSON integers, exact however large: the
ledger's counters are 128-bit, beyond what orjson (the gateway's other answers) writes, so this answer is
written by the standard library's json.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from gateway.errors import bad_request, validation_failed
from gateway.resources import DATABASE
from pm.config.constants import BALANCES_PAGE_ROWS_DEFAULT, BALANCES_PAGE_ROWS_MAX
from pm.store.balance_snapshots import ACCOUNT_ID_MAX, ACCOUNT_KINDS, snapshot_page

_PAGE_PATTERN = re.compile(r"[1-9][0-9]{0,38}")
_LIMIT_PATTERN = re.compile(r"[1-9][0-9]{0,5}")


async def list_balances(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind is not None and kind not in ACCOUNT_KINDS:
        raise validation_failed(f"kind must be one of {', '.join(ACCOUNT_KINDS)}")
    limit = _limit(request.query.get("limit"))
    after = _page(request.query.get("page"))
    # One row more than shown tells whether another page follows, without a second query.
    rows = await snapshot_page(request.app[DATABASE], kind, after, limit + 1)
    items = rows[:limit]
    next_page = items[-1]["account_id"] if len(rows) > limit else None
    body = json.dumps({"items": items, "next_page": next_page}, separators=(",", ":"))
    return web.Response(text=body, content_type="application/json")


def _limit(text: str | None) -> int:
    if text is None:
        return BALANCES_PAGE_ROWS_DEFAULT
    if not _LIMIT_PATTERN.fullmatch(text) or int(text) > BALANCES_PAGE_ROWS_MAX:
        raise validation_failed(f"limit must be an integer from 1 to {BALANCES_PAGE_ROWS_MAX}")
    return int(text)


def _page(text: str | None) -> int:
    """The account id the page starts after (0: the first page)."""
    if text is None:
        return 0
    if not _PAGE_PATTERN.fullmatch(text) or int(text) > ACCOUNT_ID_MAX:
        raise bad_request("malformed page: pass the next_page of the previous answer")
    return int(text)


# (method, path, view, route name), served with the admin scope (gateway/admin_api.py).
ROUTES = (("GET", "/admin/balances", list_balances, "admin_balances"),)
