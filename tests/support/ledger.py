"""Helpers shared by the ledger conformance suite (builders and checked shortcuts; no tests here).

Every builder returns the official `tigerbeetle` classes. Every test makes its own accounts with
fresh `tb.id()`s on a ledger number of its own, so the suite never assumes an empty ledger and can
run against a shared PostgreSQL database or a real TigerBeetle cluster.

Documentation followed throughout the suite (tigerbeetle/tigerbeetle, as stored in the index):
- docs/reference/requests/create_transfers.md @ c1c325e5 (newest stored version: has
  `id_already_failed`, `exists_with_different_ledger`, `closing_transfer_must_be_pending`; its result
  order matches the declaration order of `CreateTransferStatus` in tigerbeetle 0.17.9 bindings.py,
  which is the precedence order; `ok` is renamed `created` in 0.17 per docs/reference/api-changes.md)
- docs/reference/requests/create_accounts.md @ 82d424a7 (same, for accounts)
- docs/reference/transfer.md and account.md @ 1a56b16f, account-filter.md @ 1a56b16f,
  query-filter.md @ 386354c0, requests/get_account_balances.md @ 1ff11ecc,
  requests/get_account_transfers.md @ 0366bfe6, requests/query_accounts.md @ 481035f6,
  requests/lookup_*.md, coding/two-phase-transfers.md @ a871b022, coding/linked-events.md @ dd72189a,
  coding/time.md @ 4e8aa024, coding/recipes/close-account.md @ 858f700b,
  coding/recipes/balance-bounds.md @ 4b2947a0, reference/api-changes.md @ 24389ac6 (0.17.0 results)
- the README of the installed client, tigerbeetle-0.17.9.dist-info/METADATA (0.17 result semantics)
- src/state_machine.zig (index version with `id_already_failed`, 0.16.x) where the docs are silent.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

import tigerbeetle as tb

AMOUNT_MAX = tb.AMOUNT_MAX
U128_MAX = 2**128 - 1
U64_MAX = 2**64 - 1

AF = tb.AccountFlags
TF = tb.TransferFlags
AS = tb.CreateAccountStatus
TS = tb.CreateTransferStatus

DEFAULT_CODE = 7


def unique_ledger() -> int:
    """A ledger number no other test (or run) uses: partitions this test's accounts on shared backends."""
    return 2**31 + secrets.randbelow(2**31 - 1) + 1


def unique_u64() -> int:
    return secrets.randbelow(2**63) + 1


def unique_u32() -> int:
    return secrets.randbelow(2**31) + 1


def account(
    *,
    ledger: int,
    id: int | None = None,
    code: int = DEFAULT_CODE,
    flags: int = AF.NONE,
    user_data_128: int = 0,
    user_data_64: int = 0,
    user_data_32: int = 0,
    timestamp: int = 0,
    **balances: int,
) -> tb.Account:
    return tb.Account(
        id=tb.id() if id is None else id,
        ledger=ledger,
        code=code,
        flags=flags,
        user_data_128=user_data_128,
        user_data_64=user_data_64,
        user_data_32=user_data_32,
        timestamp=timestamp,
        **balances,
    )


def transfer(
    *,
    ledger: int,
    dr: int = 0,
    cr: int = 0,
    amount: int = 0,
    id: int | None = None,
    code: int = DEFAULT_CODE,
    flags: int = TF.NONE,
    pending_id: int = 0,
    timeout: int = 0,
    user_data_128: int = 0,
    user_data_64: int = 0,
    user_data_32: int = 0,
    timestamp: int = 0,
) -> tb.Transfer:
    return tb.Transfer(
        id=tb.id() if id is None else id,
        debit_account_id=dr,
        credit_account_id=cr,
        amount=amount,
        pending_id=pending_id,
        user_data_128=user_data_128,
        user_data_64=user_data_64,
        user_data_32=user_data_32,
        timeout=timeout,
        ledger=ledger,
        code=code,
        flags=flags,
        timestamp=timestamp,
    )


def post(pending: tb.Transfer, amount: int = AMOUNT_MAX, **fields) -> tb.Transfer:
    """A post of `pending` that leaves the optional fields zero (they default to the pending's)."""
    return tb.Transfer(
        id=fields.pop("id", tb.id()),
        pending_id=pending.id,
        amount=amount,
        flags=fields.pop("flags", TF.POST_PENDING_TRANSFER),
        **fields,
    )


def void(pending: tb.Transfer, amount: int = 0, **fields) -> tb.Transfer:
    return tb.Transfer(
        id=fields.pop("id", tb.id()),
        pending_id=pending.id,
        amount=amount,
        flags=fields.pop("flags", TF.VOID_PENDING_TRANSFER),
        **fields,
    )


def account_filter(account: int, **fields) -> tb.AccountFilter:
    """An AccountFilter on `account` (both sides, no limit to speak of); `fields` override anything."""
    values = {
        "account_id": account,
        "user_data_128": 0,
        "user_data_64": 0,
        "user_data_32": 0,
        "code": 0,
        "timestamp_min": 0,
        "timestamp_max": 0,
        "limit": 8189,
        "flags": tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS,
    }
    values.update(fields)
    return tb.AccountFilter(**values)


def query_filter(**fields) -> tb.QueryFilter:
    values = {
        "user_data_128": 0,
        "user_data_64": 0,
        "user_data_32": 0,
        "ledger": 0,
        "code": 0,
        "timestamp_min": 0,
        "timestamp_max": 0,
        "limit": 8189,
        "flags": tb.QueryFilterFlags.NONE,
    }
    values.update(fields)
    return tb.QueryFilter(**values)


async def account_statuses(led, accounts: Sequence[tb.Account]) -> list[tb.CreateAccountStatus]:
    results = await led.create_accounts(list(accounts))
    assert len(results) == len(accounts), "one result per event"
    return [r.status for r in results]


async def transfer_statuses(led, transfers: Sequence[tb.Transfer]) -> list[tb.CreateTransferStatus]:
    results = await led.create_transfers(list(transfers))
    assert len(results) == len(transfers), "one result per event"
    return [r.status for r in results]


async def create_accounts_ok(led, accounts: Sequence[tb.Account]) -> list[tb.CreateAccountResult]:
    results = await led.create_accounts(list(accounts))
    assert [r.status for r in results] == [AS.CREATED] * len(accounts), results
    return results


async def create_transfers_ok(led, transfers: Sequence[tb.Transfer]) -> list[tb.CreateTransferResult]:
    results = await led.create_transfers(list(transfers))
    assert [r.status for r in results] == [TS.CREATED] * len(transfers), results
    return results


async def new_accounts(led, ledger: int, flags: Iterable[int], **fields) -> list[int]:
    """Create one account per entry of `flags` on `ledger`; return their ids."""
    accounts = [account(ledger=ledger, flags=f, **fields) for f in flags]
    await create_accounts_ok(led, accounts)
    return [a.id for a in accounts]


async def get_account(led, account_id: int) -> tb.Account:
    found = await led.lookup_accounts([account_id])
    assert len(found) == 1, f"account {account_id} not found"
    return found[0]


async def get_transfer(led, transfer_id: int) -> tb.Transfer:
    found = await led.lookup_transfers([transfer_id])
    assert len(found) == 1, f"transfer {transfer_id} not found"
    return found[0]


async def balances(led, account_id: int) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted) of one account."""
    a = await get_account(led, account_id)
    return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


async def fund(led, *, ledger: int, source: int, target: int, amount: int) -> tb.Transfer:
    """Post `amount` from `source` (an account without balance limits) to `target`."""
    t = transfer(ledger=ledger, dr=source, cr=target, amount=amount)
    await create_transfers_ok(led, [t])
    return t


def without_timestamp(obj):
    """Every field of an Account/Transfer/AccountBalance except `timestamp`, for comparisons."""
    return tuple(getattr(obj, name) for name in obj.__dataclass_fields__ if name != "timestamp")
