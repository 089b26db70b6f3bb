"""Proves `imported` accounts and transfers keep user-defined timestamps and return every `imported_*`
status as documented.

Sources: docs/reference/account.md and transfer.md @ 1a56b16f (`flags.imported`: batches must not mix
imported and non-imported events; timestamps "must be unique", "a past date", "strictly increasing";
"Imported transfers cannot have a timeout"; `timestamp` "Must be greater than 0 and less than 2^63"),
create_accounts.md @ 82d424a7 and create_transfers.md @ c1c325e5 (`imported_event_*` results and their
place in the precedence order: `imported_event_timestamp_must_not_regress` for accounts is listed last;
the transfer one is listed after `pending_transfer_expired`).

On a shared ledger the "last timestamp" is the cluster's, so each test first creates a fresh
(non-imported) object and imports just after its timestamp; cluster time is nanoseconds since the UNIX
epoch (docs/coding/time.md), so `time.time_ns() + 1 hour` is in the future.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from tests.support.ledger import (
    AF,
    AS,
    TF,
    TS,
    account,
    account_statuses,
    balances,
    create_accounts_ok,
    create_transfers_ok,
    get_account,
    get_transfer,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)

IMPORTED_A = AF.IMPORTED
IMPORTED_T = TF.IMPORTED
HOUR_NS = 3600 * 10**9


async def latest_account_timestamp(led, L) -> int:
    """Create a probe account; its timestamp is now the cluster's latest."""
    [result] = await create_accounts_ok(led, [account(ledger=L)])
    return result.timestamp


async def latest_transfer_timestamp(led, L) -> tuple[int, int, int]:
    """Create two accounts and a probe transfer between them: (debit, credit, transfer timestamp)."""
    a, b = await new_accounts(led, L, [AF.NONE, AF.NONE])
    [result] = await create_transfers_ok(led, [transfer(ledger=L, dr=a, cr=b, amount=1)])
    return a, b, result.timestamp


# --- accounts


async def test_imported_account_keeps_its_timestamp(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    chain = [
        account(ledger=L, flags=IMPORTED_A | AF.LINKED, timestamp=t0 + 1),
        account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 2),
    ]
    results = await ledger.create_accounts(chain)
    assert [r.status for r in results] == [AS.CREATED, AS.CREATED]
    assert [r.timestamp for r in results] == [t0 + 1, t0 + 2]
    stored = await get_account(ledger, chain[1].id)
    assert stored.timestamp == t0 + 2
    assert stored.flags == IMPORTED_A


async def test_reimporting_an_account_is_exists(ledger):
    # The regress check comes after the idempotency checks (create_accounts.md order).
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    a = account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 1)
    await create_accounts_ok(ledger, [a])
    assert await account_statuses(ledger, [dataclasses.replace(a)]) == [AS.EXISTS]


async def test_account_imported_event_expected(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    batch = [account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 1), account(ledger=L)]
    assert await account_statuses(ledger, batch) == [AS.CREATED, AS.IMPORTED_EVENT_EXPECTED]


async def test_account_imported_event_not_expected(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    batch = [account(ledger=L), account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 1)]
    assert await account_statuses(ledger, batch) == [AS.CREATED, AS.IMPORTED_EVENT_NOT_EXPECTED]


@pytest.mark.parametrize("timestamp", [0, 2**63, 2**64 - 1], ids=["zero", "2^63", "u64_max"])
async def test_account_imported_event_timestamp_out_of_range(ledger, timestamp):
    a = account(ledger=unique_ledger(), flags=IMPORTED_A, timestamp=timestamp)
    assert await account_statuses(ledger, [a]) == [AS.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE]


async def test_account_imported_event_timestamp_must_not_advance(ledger):
    a = account(ledger=unique_ledger(), flags=IMPORTED_A, timestamp=time.time_ns() + HOUR_NS)
    assert await account_statuses(ledger, [a]) == [AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE]


async def test_account_imported_event_timestamp_must_not_regress(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    for ts in (t0, t0 - 1, t0 - HOUR_NS):
        a = account(ledger=L, flags=IMPORTED_A, timestamp=ts)
        assert await account_statuses(ledger, [a]) == [AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS], ts


async def test_account_timestamps_must_increase_within_a_batch(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    batch = [
        account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 2),
        account(ledger=L, flags=IMPORTED_A, timestamp=t0 + 1),
    ]
    assert await account_statuses(ledger, batch) == [AS.CREATED, AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]


async def test_account_timestamp_must_not_equal_a_transfer_timestamp(ledger):
    # create_accounts.md: the timestamp "cannot be equal to the timestamp of any existing Transfer".
    L = unique_ledger()
    _, _, t1 = await latest_transfer_timestamp(ledger, L)  # newer than every account
    a = account(ledger=L, flags=IMPORTED_A, timestamp=t1)
    assert await account_statuses(ledger, [a]) == [AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]


async def test_account_precedence_of_imported_checks(ledger):
    L = unique_ledger()
    t0 = await latest_account_timestamp(ledger, L)
    cases = [
        (dict(timestamp=0, id=0, ledger=0), AS.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        (dict(timestamp=time.time_ns() + HOUR_NS, id=0), AS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE),
        (dict(timestamp=t0, ledger=0), AS.LEDGER_MUST_NOT_BE_ZERO),  # regress is listed last
        (dict(timestamp=t0, code=0), AS.CODE_MUST_NOT_BE_ZERO),
    ]
    for fields, status in cases:
        a = account(**{"ledger": L, "flags": IMPORTED_A, **fields})
        assert await account_statuses(ledger, [a]) == [status], fields
    # The batch-level checks come first of all.
    batch = [account(ledger=L), account(ledger=0, flags=IMPORTED_A, timestamp=0)]
    assert await account_statuses(ledger, batch) == [AS.CREATED, AS.IMPORTED_EVENT_NOT_EXPECTED]
    assert await account_statuses(ledger, [account(ledger=L, timestamp=5)]) == [AS.TIMESTAMP_MUST_BE_ZERO]


# --- transfers


async def test_imported_transfer_keeps_its_timestamp(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    chain = [
        transfer(ledger=L, dr=a, cr=b, amount=10, flags=IMPORTED_T | TF.LINKED, timestamp=t1 + 1),
        transfer(ledger=L, dr=a, cr=b, amount=20, flags=IMPORTED_T | TF.PENDING, timestamp=t1 + 2),
    ]
    results = await ledger.create_transfers(chain)
    assert [r.status for r in results] == [TS.CREATED, TS.CREATED]
    assert [r.timestamp for r in results] == [t1 + 1, t1 + 2]
    stored = await get_transfer(ledger, chain[1].id)
    assert (stored.timestamp, stored.flags, stored.amount) == (t1 + 2, IMPORTED_T | TF.PENDING, 20)
    assert await balances(ledger, a) == (20, 11, 0, 0)


async def test_imported_post_of_an_imported_pending(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    p = transfer(ledger=L, dr=a, cr=b, amount=20, flags=IMPORTED_T | TF.PENDING, timestamp=t1 + 1)
    await create_transfers_ok(ledger, [p])
    posting = transfer(
        ledger=L, pending_id=p.id, amount=15, flags=IMPORTED_T | TF.POST_PENDING_TRANSFER, timestamp=t1 + 2
    )
    assert await transfer_statuses(ledger, [posting]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 16, 0, 0)


async def test_reimporting_a_transfer_is_exists(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    t = transfer(ledger=L, dr=a, cr=b, amount=10, flags=IMPORTED_T, timestamp=t1 + 1)
    await create_transfers_ok(ledger, [t])
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.EXISTS]
    assert await balances(ledger, a) == (0, 11, 0, 0)


async def test_transfer_imported_event_expected(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    batch = [
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=t1 + 1),
        transfer(ledger=L, dr=a, cr=b, amount=1),
    ]
    assert await transfer_statuses(ledger, batch) == [TS.CREATED, TS.IMPORTED_EVENT_EXPECTED]


async def test_transfer_imported_event_not_expected(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    batch = [
        transfer(ledger=L, dr=a, cr=b, amount=1),
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=t1 + 1),
    ]
    assert await transfer_statuses(ledger, batch) == [TS.CREATED, TS.IMPORTED_EVENT_NOT_EXPECTED]


@pytest.mark.parametrize("timestamp", [0, 2**63], ids=["zero", "2^63"])
async def test_transfer_imported_event_timestamp_out_of_range(ledger, timestamp):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=timestamp)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE]


async def test_transfer_imported_event_timestamp_must_not_advance(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=time.time_ns() + HOUR_NS)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE]


async def test_transfer_imported_event_timestamp_must_not_regress(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=t1)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]
    batch = [
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=t1 + 2),
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=t1 + 1),
    ]
    assert await transfer_statuses(ledger, batch) == [
        TS.CREATED,
        TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
    ]


async def test_transfer_timestamp_must_not_equal_an_account_timestamp(ledger):
    L = unique_ledger()
    a, b, _ = await latest_transfer_timestamp(ledger, L)
    [newest] = await create_accounts_ok(ledger, [account(ledger=L)])  # newer than every transfer
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T, timestamp=newest.timestamp)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]


@pytest.mark.parametrize("side", ["debit", "credit"])
async def test_transfer_imported_event_timestamp_must_postdate_account(ledger, side):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    await asyncio.sleep(0.005)  # the new account's timestamp is then well after t1 + 1
    [young] = await new_accounts(ledger, L, [AF.NONE])
    dr, cr = (young, b) if side == "debit" else (a, young)
    t = transfer(ledger=L, dr=dr, cr=cr, amount=1, flags=IMPORTED_T, timestamp=t1 + 1)
    expected = (
        TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
        if side == "debit"
        else TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
    )
    assert await transfer_statuses(ledger, [t]) == [expected]


async def test_transfer_imported_event_timeout_must_be_zero(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=IMPORTED_T | TF.PENDING, timeout=10, timestamp=t1 + 1)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO]


async def test_transfer_precedence_of_imported_checks(ledger):
    L = unique_ledger()
    a, b, t1 = await latest_transfer_timestamp(ledger, L)
    await asyncio.sleep(0.005)
    young1, young2 = await new_accounts(ledger, L, [AF.NONE, AF.NONE])

    def imported(**fields):
        return transfer(**{"ledger": L, "dr": a, "cr": b, "amount": 1, "flags": IMPORTED_T, **fields})

    cases = [
        # out of range / must not advance come before every field check
        (imported(timestamp=0, id=0, ledger=0), TS.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        (imported(timestamp=time.time_ns() + HOUR_NS, id=0), TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE),
        # field and account checks come before the regress check
        (imported(timestamp=t1, code=0), TS.CODE_MUST_NOT_BE_ZERO),
        (imported(timestamp=t1, dr=young1, cr=young2), TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS),
        (
            imported(timestamp=t1 + 1, dr=young1, cr=young2, timeout=5, flags=IMPORTED_T | TF.PENDING),
            TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT,
        ),
        (
            imported(timestamp=t1 + 1, cr=young2, timeout=5, flags=IMPORTED_T | TF.PENDING),
            TS.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT,
        ),
    ]
    for t, status in cases:
        assert await transfer_statuses(ledger, [t]) == [status], status


async def test_imported_transfer_checks_come_before_balance_checks(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    [probe] = await create_transfers_ok(ledger, [transfer(ledger=L, dr=b, cr=a, amount=1)])
    t = transfer(ledger=L, dr=a, cr=b, amount=5, flags=IMPORTED_T, timestamp=probe.timestamp)
    assert await transfer_statuses(ledger, [t]) == [TS.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]
    t = dataclasses.replace(t, timestamp=probe.timestamp + 1)
    assert await transfer_statuses(ledger, [t]) == [TS.EXCEEDS_CREDITS]
