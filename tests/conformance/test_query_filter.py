"""Proves `query_accounts` and `query_transfers` intersect every `QueryFilter` field, order, limit and
page as documented.

Sources: docs/reference/query-filter.md @ 386354c0 (each of user_data_128/64/32, ledger, code filters
when nonzero; timestamp_min/max inclusive, zero disables; `limit` must not be zero; `flags.reversed`),
requests/query_accounts.md @ 481035f6 ("Query Accounts by the intersection of some fields and by
timestamp range"; "If any constraint is violated, return nothing"; chronological unless reversed).
Invalid filters as checked by src/state_machine.zig `get_scan_from_query_filter`: limit 0,
timestamp_min > timestamp_max (max nonzero), a timestamp of 2^64-1. Every query here is pinned to this
test's own ledger number, user_data_128 or timestamp window, because the ledger may be shared.
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    TF,
    U64_MAX,
    account,
    create_accounts_ok,
    create_transfers_ok,
    get_account,
    get_transfer,
    new_accounts,
    post,
    query_filter,
    transfer,
    unique_ledger,
)

REVERSED = tb.QueryFilterFlags.REVERSED


@pytest.fixture
async def accounts_world(ledger):
    L = unique_ledger()
    u, v = tb.id(), tb.id()
    accounts = [
        account(ledger=L, code=1, user_data_128=u, user_data_64=5, user_data_32=9),
        account(ledger=L, code=2, user_data_128=u),
        account(ledger=L, code=1, user_data_128=v, user_data_64=5),
        account(ledger=L + 1, code=1, user_data_128=u),
    ]
    results = await create_accounts_ok(ledger, accounts)
    return {
        "ledger": ledger,
        "L": L,
        "u": u,
        "v": v,
        "ids": [a.id for a in accounts],
        "ts": [r.timestamp for r in results],
    }


async def account_ids(led, **fields):
    return [a.id for a in await led.query_accounts(query_filter(**fields))]


async def test_query_accounts_by_ledger(accounts_world):
    w = accounts_world
    assert await account_ids(w["ledger"], ledger=w["L"]) == w["ids"][:3]
    assert await account_ids(w["ledger"], ledger=w["L"] + 1) == w["ids"][3:]


async def test_query_accounts_returns_the_stored_accounts(accounts_world):
    w = accounts_world
    got = await w["ledger"].query_accounts(query_filter(ledger=w["L"]))
    assert got == [await get_account(w["ledger"], i) for i in w["ids"][:3]]


async def test_query_accounts_intersects_fields(accounts_world):
    w, ids = accounts_world, accounts_world["ids"]
    led, L, u = w["ledger"], w["L"], w["u"]
    assert await account_ids(led, user_data_128=u) == [ids[0], ids[1], ids[3]]
    assert await account_ids(led, user_data_128=u, ledger=L) == [ids[0], ids[1]]
    assert await account_ids(led, user_data_64=5, ledger=L) == [ids[0], ids[2]]
    assert await account_ids(led, user_data_32=9, ledger=L) == [ids[0]]
    assert await account_ids(led, code=1, ledger=L) == [ids[0], ids[2]]
    assert await account_ids(led, code=1, user_data_128=u) == [ids[0], ids[3]]
    assert await account_ids(led, code=2, user_data_128=u, ledger=L, user_data_64=5) == []
    assert await account_ids(led, user_data_128=tb.id()) == []


async def test_query_accounts_reversed_and_limit(accounts_world):
    w, ids = accounts_world, accounts_world["ids"]
    led, L = w["ledger"], w["L"]
    assert await account_ids(led, ledger=L, flags=REVERSED) == ids[2::-1]
    assert await account_ids(led, ledger=L, limit=2) == ids[:2]
    assert await account_ids(led, ledger=L, limit=2, flags=REVERSED) == [ids[2], ids[1]]


async def test_query_accounts_timestamp_range(accounts_world):
    w, ids, ts = accounts_world, accounts_world["ids"], accounts_world["ts"]
    led, L = w["ledger"], w["L"]
    assert await account_ids(led, ledger=L, timestamp_min=ts[1], timestamp_max=ts[2]) == ids[1:3]
    assert await account_ids(led, ledger=L, timestamp_min=ts[1]) == ids[1:3]
    assert await account_ids(led, ledger=L, timestamp_max=ts[1]) == ids[:2]
    # No field filter at all: only the timestamp window (which holds exactly this batch).
    assert await account_ids(led, timestamp_min=ts[0], timestamp_max=ts[3]) == ids
    assert await account_ids(led, timestamp_min=ts[0], timestamp_max=ts[3], flags=REVERSED, limit=3) == ids[:0:-1]


@pytest.mark.parametrize(
    "fields",
    [
        dict(limit=0),
        dict(timestamp_min=2, timestamp_max=1),
        dict(timestamp_min=U64_MAX),
        dict(timestamp_max=U64_MAX),
        dict(flags=tb.QueryFilterFlags(1 << 1)),  # padding bit (state_machine.zig)
    ],
    ids=["limit_zero", "min_after_max", "min_u64_max", "max_u64_max", "reserved_flag"],
)
async def test_invalid_query_filter_returns_nothing(accounts_world, fields):
    w = accounts_world
    assert await w["ledger"].query_accounts(query_filter(ledger=w["L"], **fields)) == []
    assert await w["ledger"].query_transfers(query_filter(ledger=w["L"], **fields)) == []


@pytest.mark.parametrize(
    "fields",
    [
        dict(timestamp_min=2**63),
        dict(timestamp_min=U64_MAX - 1),
        dict(timestamp_min=2**63, timestamp_max=U64_MAX - 1),
    ],
    ids=["min_2_63", "min_u64_max_less_1", "min_2_63_max_u64_max_less_1"],
)
async def test_valid_filter_past_every_timestamp_returns_nothing(accounts_world, fields):
    # Valid (only 2^64-1 itself is refused), but no timestamp is that large: an empty range, not an error
    # (the postgres backend keeps timestamps in a signed bigint, which stops at 2^63-1).
    w = accounts_world
    assert await w["ledger"].query_accounts(query_filter(**fields)) == []
    assert await w["ledger"].query_transfers(query_filter(**fields)) == []
    assert await w["ledger"].query_accounts(query_filter(ledger=w["L"], flags=REVERSED, **fields)) == []


# --- query_transfers


@pytest.fixture
async def transfers_world(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    u = tb.id()
    p = transfer(ledger=L, dr=a, cr=b, amount=50, code=4, user_data_128=u, flags=TF.PENDING)
    ts = [
        transfer(ledger=L, dr=a, cr=b, amount=1, code=1, user_data_128=u, user_data_64=5, user_data_32=9),
        transfer(ledger=L, dr=b, cr=a, amount=2, code=2, user_data_128=u),
        transfer(ledger=L, dr=a, cr=b, amount=3, code=1, user_data_64=5),
        p,
    ]
    results = await create_transfers_ok(ledger, ts)
    posting = post(p, 20)  # user_data_128, ledger and code are taken from the pending transfer
    [posted] = await create_transfers_ok(ledger, [posting])
    return {
        "ledger": ledger,
        "L": L,
        "u": u,
        "ids": [t.id for t in ts] + [posting.id],
        "ts": [r.timestamp for r in results] + [posted.timestamp],
    }


async def transfer_ids(led, **fields):
    return [t.id for t in await led.query_transfers(query_filter(**fields))]


async def test_query_transfers_by_ledger_and_fields(transfers_world):
    w, ids = transfers_world, transfers_world["ids"]
    led, L, u = w["ledger"], w["L"], w["u"]
    assert await transfer_ids(led, ledger=L) == ids
    assert await transfer_ids(led, user_data_128=u) == [ids[0], ids[1], ids[3], ids[4]]
    assert await transfer_ids(led, user_data_64=5, ledger=L) == [ids[0], ids[2]]
    assert await transfer_ids(led, user_data_32=9, ledger=L) == [ids[0]]
    assert await transfer_ids(led, code=1, ledger=L) == [ids[0], ids[2]]
    assert await transfer_ids(led, code=4, ledger=L) == [ids[3], ids[4]]
    assert await transfer_ids(led, code=1, user_data_128=u) == [ids[0]]
    assert await transfer_ids(led, ledger=L + 1) == []


async def test_query_transfers_returns_the_stored_transfers(transfers_world):
    w = transfers_world
    got = await w["ledger"].query_transfers(query_filter(ledger=w["L"]))
    assert got == [await get_transfer(w["ledger"], i) for i in w["ids"]]


async def test_query_transfers_reversed_limit_and_range(transfers_world):
    w, ids, ts = transfers_world, transfers_world["ids"], transfers_world["ts"]
    led, L = w["ledger"], w["L"]
    assert await transfer_ids(led, ledger=L, flags=REVERSED) == ids[::-1]
    assert await transfer_ids(led, ledger=L, limit=3) == ids[:3]
    assert await transfer_ids(led, ledger=L, limit=2, flags=REVERSED) == [ids[4], ids[3]]
    assert await transfer_ids(led, ledger=L, timestamp_min=ts[1], timestamp_max=ts[3]) == ids[1:4]
    assert await transfer_ids(led, timestamp_min=ts[0], timestamp_max=ts[3]) == ids[:4]


async def test_query_accounts_paging(ledger):
    L = unique_ledger()
    created = [account(ledger=L) for _ in range(5)]
    await create_accounts_ok(ledger, created)
    seen, cursor = [], 0
    for _ in range(10):
        page = await ledger.query_accounts(query_filter(ledger=L, limit=2, timestamp_min=cursor))
        if not page:
            break
        seen.extend(a.id for a in page)
        cursor = page[-1].timestamp + 1
    assert seen == [a.id for a in created]
