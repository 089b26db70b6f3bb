"""Proves the ledger assigns unique, strictly increasing nanosecond timestamps to accounts and transfers
alike.

Sources: docs/coding/time.md @ 4e8aa024 ("All timestamps within TigerBeetle are unique, immutable and
totally ordered. A transfer that is created before another transfer is guaranteed to have an earlier
timestamp (even if they were created in the same request)"; cluster time is physical time),
account.md / transfer.md `timestamp` ("the time the account was created, as nanoseconds since UNIX
epoch ... set by TigerBeetle to the moment the account arrives at the cluster"), api-changes.md (the
result's timestamp is the one assigned to the object).
"""

from __future__ import annotations

import time
from itertools import pairwise

from tests.support.ledger import (
    AF,
    TF,
    account,
    create_accounts_ok,
    create_transfers_ok,
    get_account,
    new_accounts,
    post,
    transfer,
    unique_ledger,
)

FIVE_MINUTES_NS = 300 * 10**9


def strictly_increasing(values):
    return all(x < y for x, y in pairwise(values))


async def test_timestamps_increase_within_and_across_batches(ledger):
    L = unique_ledger()
    first = await create_accounts_ok(ledger, [account(ledger=L) for _ in range(5)])
    second = await create_accounts_ok(ledger, [account(ledger=L) for _ in range(3)])
    stamps = [r.timestamp for r in first + second]
    assert strictly_increasing(stamps)
    assert stamps[0] > 0


async def test_result_timestamp_is_the_stored_timestamp(ledger):
    L = unique_ledger()
    accounts = [account(ledger=L) for _ in range(3)]
    results = await create_accounts_ok(ledger, accounts)
    for a, r in zip(accounts, results, strict=True):
        assert (await get_account(ledger, a.id)).timestamp == r.timestamp


async def test_accounts_and_transfers_share_one_timeline(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    account_stamps = [x.timestamp for x in await ledger.lookup_accounts([a, b])]
    p = transfer(ledger=L, dr=a, cr=b, amount=5, flags=TF.PENDING)
    batch = await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1), p])
    [posted] = await create_transfers_ok(ledger, [post(p)])
    [c_result] = await create_accounts_ok(ledger, [account(ledger=L)])
    stamps = account_stamps + [r.timestamp for r in batch] + [posted.timestamp, c_result.timestamp]
    assert strictly_increasing(stamps)
    assert len(set(stamps)) == len(stamps)


async def test_timestamps_are_nanoseconds_since_the_unix_epoch(ledger):
    before = time.time_ns()
    [result] = await create_accounts_ok(ledger, [account(ledger=unique_ledger())])
    after = time.time_ns()
    assert before - FIVE_MINUTES_NS < result.timestamp < after + FIVE_MINUTES_NS
