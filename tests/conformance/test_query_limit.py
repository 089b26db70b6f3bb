"""Proves a filter whose `limit` is above what one reply carries (8189 objects) is answered, not refused:
every filter query returns at most 8189 objects, the first 8189 in its order, whatever the limit up to
2^32-1 (the field is a u32; above that the client raises `tb.IntegerOverflowError`, test_overflow.py).

Sources: the 0.17.9 Python client checks only that `limit` fits its u32 field (bindings.py,
`validate_uint(bits=32, name="limit")`) and raises `TooMuchDataError` only for a packet the native
tb_client refuses (client.py, PacketStatus TOO_MUCH_DATA). tb_client refuses a packet whose expected
results exceed `result_max` (src/clients/c/tb_client/context.zig, `packet_enqueue`), but for a query
it expects `min(filter.limit, result_max)` results ("TODO: Handle `TooMuchData` at the client side
instead of capping the limit", `Operation.result_count_expected`), so a large limit is never refused;
the state machine then scans at most `min(filter.limit, scan buffer)` objects
(src/state_machine.zig, `prefetch_get_account_transfers` and the other scans). A reply holds
(1 MiB - 256 B header - 128 B multi-batch trailer) / 128 B = 8189 objects.

Creating 8190 objects takes a full 8189-event request, so run the `tigerbeetle` backend of this suite
against a production-configured cluster (a `--development` one takes 253 events per request).
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    account,
    account_filter,
    create_accounts_ok,
    create_transfers_ok,
    new_accounts,
    query_filter,
    transfer,
    unique_ledger,
)

RESULTS_MAX = 8189  # objects in one reply
LIMITS_ABOVE = (RESULTS_MAX + 1, 2**32 - 1)

ACCOUNT_REVERSED = tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS | tb.AccountFilterFlags.REVERSED


async def _answers(ledger, account_id: int, ledger_number: int, limit: int, reversed_: bool = False):
    """Ids (timestamps for balances) answered by the four filter queries, with `limit`."""
    account_flags = {"flags": ACCOUNT_REVERSED} if reversed_ else {}
    query_flags = tb.QueryFilterFlags.REVERSED if reversed_ else tb.QueryFilterFlags.NONE
    on_account = account_filter(account_id, limit=limit, **account_flags)
    on_ledger = query_filter(ledger=ledger_number, limit=limit, flags=query_flags)
    return {
        "get_account_transfers": [t.id for t in await ledger.get_account_transfers(on_account)],
        "get_account_balances": [b.timestamp for b in await ledger.get_account_balances(on_account)],
        "query_transfers": [t.id for t in await ledger.query_transfers(on_ledger)],
        "query_accounts": [a.id for a in await ledger.query_accounts(on_ledger)],
    }


@pytest.mark.parametrize("limit", LIMITS_ABOVE)
async def test_a_limit_above_one_reply_answers_like_the_largest_legal_one(ledger, limit):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.HISTORY, AF.NONE])
    transfers = [transfer(ledger=L, dr=a, cr=b, amount=1), transfer(ledger=L, dr=b, cr=a, amount=1)]
    results = await create_transfers_ok(ledger, transfers)

    answers = await _answers(ledger, a, L, limit)
    assert answers == await _answers(ledger, a, L, RESULTS_MAX)
    assert answers["get_account_transfers"] == answers["query_transfers"] == [t.id for t in transfers]
    assert answers["get_account_balances"] == [r.timestamp for r in results]
    assert answers["query_accounts"] == [a, b]


@pytest.mark.slow
async def test_transfer_queries_answer_one_reply_at_most(ledger):
    """8190 transfers from A (history) to B, on a ledger of their own: one more than a reply holds."""
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.HISTORY, AF.NONE])
    transfers = [transfer(ledger=L, dr=a, cr=b, amount=1) for _ in range(RESULTS_MAX + 1)]
    results = await create_transfers_ok(ledger, transfers[:RESULTS_MAX])
    results += await create_transfers_ok(ledger, transfers[RESULTS_MAX:])
    ids = [t.id for t in transfers]
    timestamps = [r.timestamp for r in results]
    for limit in LIMITS_ABOVE:
        oldest_first = await _answers(ledger, a, L, limit)
        assert oldest_first["get_account_transfers"] == oldest_first["query_transfers"] == ids[:RESULTS_MAX]
        assert oldest_first["get_account_balances"] == timestamps[:RESULTS_MAX]
        newest_first = await _answers(ledger, a, L, limit, reversed_=True)
        assert newest_first["get_account_transfers"] == newest_first["query_transfers"] == ids[:0:-1]
        assert newest_first["get_account_balances"] == timestamps[:0:-1]


@pytest.mark.slow
async def test_query_accounts_answers_one_reply_at_most(ledger):
    L = unique_ledger()
    accounts = [account(ledger=L) for _ in range(RESULTS_MAX + 1)]
    await create_accounts_ok(ledger, accounts[:RESULTS_MAX])
    await create_accounts_ok(ledger, accounts[RESULTS_MAX:])
    ids = [a.id for a in accounts]
    for limit in LIMITS_ABOVE:
        assert [a.id for a in await ledger.query_accounts(query_filter(ledger=L, limit=limit))] == ids[:RESULTS_MAX]
        newest_first = query_filter(ledger=L, limit=limit, flags=tb.QueryFilterFlags.REVERSED)
        assert [a.id for a in await ledger.query_accounts(newest_first)] == ids[:0:-1]
