"""A ledger larger than one page of the check, and a wrapper that commits transfers between the check's
page reads (as live traffic does), for the tests of `ledger.check.run_check` on any backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tigerbeetle as tb

from ledger import BATCH_EVENTS_MAX, accounts
from ledger.open import Ledger

THB = 764
USERS = BATCH_EVENTS_MAX + 10  # 8,200 accounts with the adjustments one: two pages


async def two_page_ledger(ledger: Ledger) -> tuple[int, int]:
    """Create `adjustments:THB` (first page) and USERS users (the last one on the second page); return the
    adjustments account's id and the last user's."""
    created = [accounts.adjustments("THB").to_tigerbeetle()]
    created += [accounts.user(user_id, "THB").to_tigerbeetle() for user_id in range(1, USERS + 1)]
    for start in range(0, len(created), BATCH_EVENTS_MAX):
        results = await ledger.create_accounts(created[start : start + BATCH_EVENTS_MAX])
        assert {r.status for r in results} == {tb.CreateAccountStatus.CREATED}, results[:3]
    return created[0].id, created[-1].id


def thb_transfer(debit_id: int, credit_id: int, amount: int, timeout_s: int = 0) -> tb.Transfer:
    """A posted transfer, or a pending one when `timeout_s` is set."""
    return tb.Transfer(
        id=tb.id(), debit_account_id=debit_id, credit_account_id=credit_id, amount=amount, ledger=THB, code=1,
        flags=tb.TransferFlags.PENDING if timeout_s else tb.TransferFlags.NONE, timeout=timeout_s,
    )  # fmt: skip


async def create_ok(ledger: Ledger, transfer: tb.Transfer) -> None:
    [result] = await ledger.create_transfers([transfer])
    assert result.status == tb.CreateTransferStatus.CREATED, result


class BetweenPages:
    """`ledger`, but after the first full page of each scan of every account (the check's filter, from
    timestamp 0) it awaits `between()` before answering, at most `times` times: what another process
    commits while the check reads its next page."""

    def __init__(self, ledger: Ledger, between: Callable[[], Awaitable[None]], times: int) -> None:
        self._ledger = ledger
        self._between = between
        self.times_left = times
        self.query_accounts_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        self.query_accounts_calls += 1
        page = await self._ledger.query_accounts(f)
        if f.timestamp_min == 0 and f.ledger == 0 and len(page) == BATCH_EVENTS_MAX and self.times_left > 0:
            self.times_left -= 1
            await self._between()
        return page
