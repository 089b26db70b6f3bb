"""Proves `get_account_transfers` and `get_account_balances` honour every `AccountFilter` field and
return nothing for invalid filters.

Sources: docs/reference/account-filter.md @ 1a56b16f (fields; zero disables a filter; timestamps
inclusive; `limit` must not be zero; flags debits/credits/reversed), requests/get_account_transfers.md
@ 0366bfe6 ("If any constraint is violated, return nothing"; sorted chronologically unless reversed),
requests/get_account_balances.md @ 1ff11ecc ("Only accounts created with the history flag set retain
historical balances"; "Each balance returned has a corresponding transfer with the same timestamp";
"The amounts refer to the account balance recorded after the transfer execution"; "If the account
does not have the flag history set, return nothing"). Invalid filters as checked by
src/state_machine.zig `get_scan_from_account_filter`: account_id 0 or 2^128-1, timestamp_min or
timestamp_max 2^64-1, timestamp_min > timestamp_max (max nonzero), limit 0, neither debits nor credits.
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    TF,
    U64_MAX,
    U128_MAX,
    account_filter,
    create_transfers_ok,
    get_transfer,
    new_accounts,
    post,
    transfer,
    unique_ledger,
)

DEBITS = tb.AccountFilterFlags.DEBITS
CREDITS = tb.AccountFilterFlags.CREDITS
REVERSED = tb.AccountFilterFlags.REVERSED


@pytest.fixture
async def world(ledger):
    """A (history), B, C; t1..t4 involve A, t5 does not."""
    L = unique_ledger()
    a, b, c = await new_accounts(ledger, L, [AF.HISTORY, AF.NONE, AF.NONE])
    u, v = tb.id(), tb.id()
    ts = [
        transfer(ledger=L, dr=a, cr=b, amount=10, code=1, user_data_128=u, user_data_64=5, user_data_32=9),
        transfer(ledger=L, dr=b, cr=a, amount=20, code=2, user_data_128=u),
        transfer(ledger=L, dr=a, cr=c, amount=30, code=1, user_data_128=v),
        transfer(ledger=L, dr=c, cr=a, amount=40, code=3, user_data_64=5),
        transfer(ledger=L, dr=b, cr=c, amount=50, code=1, user_data_128=u),
    ]
    results = await create_transfers_ok(ledger, ts)
    return {
        "ledger": ledger,
        "a": a,
        "b": b,
        "c": c,
        "u": u,
        "v": v,
        "t": [t.id for t in ts],
        "ts": [r.timestamp for r in results],
    }


async def ids(led, flt):
    return [t.id for t in await led.get_account_transfers(flt)]


async def test_debits_and_credits_chronological(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    assert await ids(led, account_filter(a)) == t[:4]


async def test_returned_transfers_equal_the_stored_ones(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    got = await led.get_account_transfers(account_filter(a))
    assert got == [await get_transfer(led, tid) for tid in t[:4]]


async def test_debits_only_and_credits_only(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    assert await ids(led, account_filter(a, flags=DEBITS)) == [t[0], t[2]]
    assert await ids(led, account_filter(a, flags=CREDITS)) == [t[1], t[3]]


async def test_reversed(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    assert await ids(led, account_filter(a, flags=DEBITS | CREDITS | REVERSED)) == t[3::-1]
    assert await ids(led, account_filter(a, flags=DEBITS | REVERSED)) == [t[2], t[0]]


async def test_limit(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    assert await ids(led, account_filter(a, limit=2)) == t[:2]
    assert await ids(led, account_filter(a, limit=2, flags=DEBITS | CREDITS | REVERSED)) == [t[3], t[2]]
    assert await ids(led, account_filter(a, limit=1)) == t[:1]


async def test_timestamp_range_is_inclusive(world):
    led, a, t, ts = world["ledger"], world["a"], world["t"], world["ts"]
    assert await ids(led, account_filter(a, timestamp_min=ts[1], timestamp_max=ts[2])) == t[1:3]
    assert await ids(led, account_filter(a, timestamp_min=ts[2])) == t[2:4]
    assert await ids(led, account_filter(a, timestamp_max=ts[1])) == t[:2]
    assert await ids(led, account_filter(a, timestamp_min=ts[1], timestamp_max=ts[1])) == [t[1]]
    assert await ids(led, account_filter(a, timestamp_min=ts[1] + 1, timestamp_max=ts[2] - 1)) == []


async def test_paging_with_timestamp_min(world):
    led, a, t = world["ledger"], world["a"], world["t"]
    seen, cursor = [], 0
    while True:
        page = await led.get_account_transfers(account_filter(a, limit=1, timestamp_min=cursor))
        if not page:
            break
        seen.extend(x.id for x in page)
        cursor = page[-1].timestamp + 1
    assert seen == t[:4]


async def test_user_data_and_code_filters(world):
    led, a, t, u = world["ledger"], world["a"], world["t"], world["u"]
    assert await ids(led, account_filter(a, user_data_128=u)) == [t[0], t[1]]
    assert await ids(led, account_filter(a, user_data_128=world["v"])) == [t[2]]
    assert await ids(led, account_filter(a, user_data_64=5)) == [t[0], t[3]]
    assert await ids(led, account_filter(a, user_data_32=9)) == [t[0]]
    assert await ids(led, account_filter(a, code=1)) == [t[0], t[2]]
    assert await ids(led, account_filter(a, code=1, user_data_128=u)) == [t[0]]
    assert await ids(led, account_filter(a, code=2, flags=DEBITS)) == []
    assert await ids(led, account_filter(a, user_data_128=tb.id())) == []


@pytest.mark.parametrize(
    "fields",
    [
        dict(limit=0),
        dict(flags=tb.AccountFilterFlags.NONE),
        dict(flags=REVERSED),
        dict(account_id=0),
        dict(account_id=U128_MAX),
        dict(timestamp_min=2, timestamp_max=1),
        dict(timestamp_min=U64_MAX),
        dict(timestamp_max=U64_MAX),
        dict(flags=DEBITS | CREDITS | tb.AccountFilterFlags(1 << 3)),  # padding bit (state_machine.zig)
    ],
    ids=[
        "limit_zero",
        "no_flags",
        "reversed_only",
        "account_zero",
        "account_max",
        "min_after_max",
        "min_u64_max",
        "max_u64_max",
        "reserved_flag",
    ],
)
async def test_invalid_filter_returns_nothing(world, fields):
    led, a = world["ledger"], world["a"]
    assert await led.get_account_transfers(account_filter(a, **fields)) == []
    assert await led.get_account_balances(account_filter(a, **fields)) == []


@pytest.mark.parametrize(
    "fields",
    [
        dict(timestamp_min=2**63),
        dict(timestamp_min=U64_MAX - 1),
        dict(timestamp_min=2**63, timestamp_max=U64_MAX - 1),
    ],
    ids=["min_2_63", "min_u64_max_less_1", "min_2_63_max_u64_max_less_1"],
)
async def test_valid_filter_past_every_timestamp_returns_nothing(world, fields):
    # Valid (only 2^64-1 itself is refused), but no timestamp is that large: an empty range, not an error
    # (the postgres backend keeps timestamps in a signed bigint, which stops at 2^63-1).
    led, a = world["ledger"], world["a"]
    assert await led.get_account_transfers(account_filter(a, **fields)) == []
    assert await led.get_account_balances(account_filter(a, **fields)) == []
    assert await led.get_account_transfers(account_filter(a, flags=DEBITS | CREDITS | REVERSED, **fields)) == []


async def test_unknown_account_returns_nothing(world):
    led = world["ledger"]
    assert await led.get_account_transfers(account_filter(tb.id())) == []
    assert await led.get_account_balances(account_filter(tb.id())) == []


# --- get_account_balances


def amounts(balances):
    return [(b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted) for b in balances]


async def test_balances_after_each_transfer(world):
    led, a, ts = world["ledger"], world["a"], world["ts"]
    got = await led.get_account_balances(account_filter(a))
    assert amounts(got) == [(0, 10, 0, 0), (0, 10, 0, 20), (0, 40, 0, 20), (0, 40, 0, 60)]
    assert [b.timestamp for b in got] == ts[:4]
    assert all(isinstance(b, tb.AccountBalance) for b in got)


async def test_balances_filters(world):
    led, a, ts, u = world["ledger"], world["a"], world["ts"], world["u"]
    assert amounts(await led.get_account_balances(account_filter(a, flags=DEBITS | CREDITS | REVERSED))) == [
        (0, 40, 0, 60),
        (0, 40, 0, 20),
        (0, 10, 0, 20),
        (0, 10, 0, 0),
    ]
    assert [b.timestamp for b in await led.get_account_balances(account_filter(a, limit=2))] == ts[:2]
    assert [b.timestamp for b in await led.get_account_balances(account_filter(a, flags=DEBITS))] == [
        ts[0],
        ts[2],
    ]
    assert [b.timestamp for b in await led.get_account_balances(account_filter(a, flags=CREDITS))] == [
        ts[1],
        ts[3],
    ]
    got = await led.get_account_balances(account_filter(a, timestamp_min=ts[1], timestamp_max=ts[2]))
    assert [b.timestamp for b in got] == ts[1:3]
    assert [b.timestamp for b in await led.get_account_balances(account_filter(a, code=1))] == [ts[0], ts[2]]
    assert [b.timestamp for b in await led.get_account_balances(account_filter(a, user_data_128=u))] == ts[:2]


async def test_balances_only_for_accounts_with_history(world):
    led = world["ledger"]
    assert await led.get_account_balances(account_filter(world["b"])) == []
    assert await led.get_account_balances(account_filter(world["c"])) == []
    assert len(await led.get_account_transfers(account_filter(world["b"]))) == 3


async def test_balances_record_pending_and_post(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.HISTORY])
    p = transfer(ledger=L, dr=a, cr=b, amount=50, flags=TF.PENDING)
    await create_transfers_ok(ledger, [p])
    [posted] = await create_transfers_ok(ledger, [post(p, 30)])
    got = await ledger.get_account_balances(account_filter(b))
    assert amounts(got) == [(0, 0, 50, 0), (0, 0, 0, 30)]
    assert got[1].timestamp == posted.timestamp
