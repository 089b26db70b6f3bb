"""Proves `lookup_accounts`/`lookup_transfers` return one object per found id, in request order, and
nothing for missing ids.

Sources: docs/reference/requests/lookup_accounts.md and lookup_transfers.md (each event is one id: "If
the account exists, return the Account. If the account does not exist, return nothing."), the 0.17.9
Python client README ("If no account matches an ID, no object is returned for that account"), and
src/state_machine.zig `execute_lookup_accounts`/`execute_lookup_transfers`, which walk the request's
ids in order and append each one found (so order follows the request, duplicates repeat, and an id
that failed with a transient error is not a transfer).
"""

from __future__ import annotations

import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    TF,
    TS,
    account,
    create_accounts_ok,
    create_transfers_ok,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)


async def test_lookup_accounts_follows_request_order_and_skips_missing(ledger):
    L = unique_ledger()
    accounts = [account(ledger=L, user_data_32=i + 1) for i in range(4)]
    await create_accounts_ok(ledger, accounts)
    a, b, c, d = (x.id for x in accounts)
    missing = tb.id()
    found = await ledger.lookup_accounts([d, missing, b, a, missing, c])
    assert [x.id for x in found] == [d, b, a, c]
    assert [x.user_data_32 for x in found] == [4, 2, 1, 3]


async def test_lookup_accounts_repeats_duplicates(ledger):
    [a] = await new_accounts(ledger, unique_ledger(), [AF.NONE])
    assert [x.id for x in await ledger.lookup_accounts([a, a])] == [a, a]


async def test_lookup_accounts_of_nothing_found(ledger):
    assert await ledger.lookup_accounts([tb.id(), tb.id()]) == []


async def test_lookup_transfers_follows_request_order_and_skips_missing(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    transfers = [transfer(ledger=L, dr=a, cr=b, amount=i + 1) for i in range(3)]
    await create_transfers_ok(ledger, transfers)
    t1, t2, t3 = (t.id for t in transfers)
    found = await ledger.lookup_transfers([t3, tb.id(), t1, t2, t2])
    assert [t.id for t in found] == [t3, t1, t2, t2]
    assert [t.amount for t in found] == [3, 1, 2, 2]


async def test_lookup_transfers_does_not_return_failed_transfers(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    transient = transfer(ledger=L, dr=a, cr=b, amount=1)
    invalid = transfer(ledger=L, dr=a, cr=b, amount=1, code=0)
    assert await transfer_statuses(ledger, [transient, invalid]) == [
        TS.EXCEEDS_CREDITS,
        TS.CODE_MUST_NOT_BE_ZERO,
    ]
    assert await ledger.lookup_transfers([transient.id, invalid.id]) == []


async def test_account_ids_and_transfer_ids_are_separate(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=b, amount=1, flags=TF.NONE)
    await create_transfers_ok(ledger, [t])
    assert await ledger.lookup_transfers([a]) == []
    assert await ledger.lookup_accounts([t.id]) == []
