"""`memory://`: TigerBeetle's semantics in-process, for unit tests and as the reference model.

All state lives in one `State`; each request runs to completion without awaiting, so concurrent
callers in one event loop see requests applied one at a time, as a cluster applies them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator

import tigerbeetle as tb

from ledger import engine, filters, validate
from ledger.clock import next_batch_timestamp
from ledger.state import State


class MemoryLedger:
    def __init__(self) -> None:
        self._state = State()
        self._last_timestamp = 0
        # Transfer ids per account, in timestamp order (insertion order is timestamp order:
        # timestamps only grow, and imported ones may not regress).
        self._by_account: dict[int, list[int]] = defaultdict(list)
        self._state.on_transfer_inserted = self._index_transfer
        self._state.on_transfer_removed = self._unindex_transfer

    def _index_transfer(self, t: tb.Transfer) -> None:
        self._by_account[t.debit_account_id].append(t.id)
        self._by_account[t.credit_account_id].append(t.id)

    def _unindex_transfer(self, t: tb.Transfer) -> None:
        # Rollbacks undo the most recent inserts first, so the id is at the end of each list.
        for account_id in (t.credit_account_id, t.debit_account_id):
            removed = self._by_account[account_id].pop()
            assert removed == t.id

    def _tick(self, event_count: int) -> int:
        self._last_timestamp = next_batch_timestamp(self._last_timestamp, event_count)
        return self._last_timestamp

    def _pulse(self) -> None:
        """Expire the pending transfers whose timeout has passed (TigerBeetle's `pulse`)."""
        for _ in range(1_000_000):  # bounded: each round expires up to a full batch
            due = engine.due_expiries(self._state, self._next_timestamp_bound(), validate.BATCH_EVENTS_MAX)
            if not due:
                break
            engine.expire_pending_transfers(self._state, due, self._tick(len(due)))
        self._state.clear_changes()

    def _next_timestamp_bound(self) -> int:
        return next_batch_timestamp(self._last_timestamp, 1)

    # -- the TigerBeetle client API ----------------------------------------------------------

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validate.check_accounts(accounts)
        self._pulse()
        results = engine.create_accounts(self._state, accounts, self._tick(len(accounts)))
        self._state.clear_changes()
        return results

    async def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validate.check_transfers(transfers)
        self._pulse()
        results = engine.create_transfers(self._state, transfers, self._tick(len(transfers)))
        self._state.clear_changes()
        return results

    async def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        validate.check_ids(ids)
        self._pulse()
        found = (self._state.accounts.get(account_id) for account_id in ids)
        return [dataclasses.replace(a) for a in found if a is not None]

    async def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]:
        validate.check_ids(ids)
        self._pulse()
        found = (self._state.transfers.get(transfer_id) for transfer_id in ids)
        return [dataclasses.replace(t) for t in found if t is not None]

    async def get_account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]:
        validate.check_account_filter(f)
        self._pulse()
        if not filters.account_filter_valid(f):
            return []
        return [dataclasses.replace(t) for t in self._account_transfers(f)]

    async def get_account_balances(self, f: tb.AccountFilter) -> list[tb.AccountBalance]:
        validate.check_account_filter(f)
        self._pulse()
        account = self._state.accounts.get(f.account_id)
        if account is None or not account.flags & tb.AccountFlags.HISTORY:
            return []
        if not filters.account_filter_valid(f):
            return []
        balances = []
        for t in self._account_transfers(f):
            event = self._state.balance_events[t.timestamp]
            balance = event.debit_balance if event.debit_account_id == f.account_id else event.credit_balance
            assert balance is not None, "an account with history has a balance at each of its transfers"
            balances.append(
                tb.AccountBalance(
                    debits_pending=balance.debits_pending,
                    debits_posted=balance.debits_posted,
                    credits_pending=balance.credits_pending,
                    credits_posted=balance.credits_posted,
                    timestamp=t.timestamp,
                )
            )
        return balances

    async def query_accounts(self, f: tb.QueryFilter) -> list[tb.Account]:
        validate.check_query_filter(f)
        self._pulse()
        if not filters.query_filter_valid(f):
            return []
        found = _take(self._ordered(self._state.accounts.values(), f.flags), f, filters.result_limit(f.limit))
        return [dataclasses.replace(a) for a in found]

    async def query_transfers(self, f: tb.QueryFilter) -> list[tb.Transfer]:
        validate.check_query_filter(f)
        self._pulse()
        if not filters.query_filter_valid(f):
            return []
        found = _take(
            self._ordered(self._state.transfers.values(), f.flags), f, filters.result_limit(f.limit)
        )
        return [dataclasses.replace(t) for t in found]

    # -- helpers -----------------------------------------------------------------------------

    def _account_transfers(self, f: tb.AccountFilter) -> list[tb.Transfer]:
        ids = self._by_account.get(f.account_id, [])
        ordered = reversed(ids) if f.flags & tb.AccountFilterFlags.REVERSED else iter(ids)
        limit = filters.result_limit(f.limit)
        found: list[tb.Transfer] = []
        seen: set[int] = set()
        for transfer_id in ordered:
            if transfer_id in seen:
                continue
            seen.add(transfer_id)
            t = self._state.transfers[transfer_id]
            if filters.transfer_matches_account_filter(t, f):
                found.append(t)
                if len(found) >= limit:
                    break
        return found

    @staticmethod
    def _ordered(objects: Iterable, flags: int) -> Iterator:
        items = list(objects)
        return reversed(items) if flags & tb.QueryFilterFlags.REVERSED else iter(items)

    async def close(self) -> None:
        return None


def _take(objects: Iterator, f: tb.QueryFilter, limit: int) -> list:
    found = []
    for obj in objects:
        if filters.matches_query(obj, f):
            found.append(obj)
            if len(found) >= limit:
                break
    return found
