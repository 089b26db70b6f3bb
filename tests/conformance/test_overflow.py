"""Proves 128-bit amounts overflow into the documented `overflows_*` results and out-of-range integers
are rejected like the official client does.

Sources: create_transfers.md @ c1c325e5 (`overflows_debits_pending` ... `overflows_credits`: "would
overflow a 128-bit unsigned integer"; listed after the closed-account checks and before
`exceeds_credits`). `overflows_timeout` ("transfer.timestamp + (transfer.timeout * 1_000_000_000) would
exceed 2^63") cannot be produced: the largest timeout (2^32 - 1 s, about 136 years) added to any
present-day cluster timestamp stays below 2^63 until about 2128, and imported transfers, whose
timestamps the user picks, cannot have a timeout at all; so it is not tested.

Client-side bounds: the official client validates every integer field when it serializes a request
(`tigerbeetle/lib.py` `validate_uint`, called from `CAccount/CTransfer/CAccountFilter/CQueryFilter
.from_param`) and raises `tb.IntegerOverflowError` (a `ValueError`) for values that are negative or do
not fit the field, before anything is sent; so the whole batch is refused and nothing is written.
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    AMOUNT_MAX,
    TF,
    TS,
    account,
    account_filter,
    balances,
    create_transfers_ok,
    new_accounts,
    query_filter,
    transfer,
    transfer_statuses,
    unique_ledger,
)

HALF = 2**127


async def test_amount_max_is_a_valid_amount(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=AMOUNT_MAX)]) == [
        TS.CREATED
    ]
    assert await balances(ledger, a) == (0, AMOUNT_MAX, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, AMOUNT_MAX)


async def test_overflows_debits_pending_and_credits_pending(ledger):
    L = unique_ledger()
    a, b, c = await new_accounts(ledger, L, [AF.NONE] * 3)
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=b, amount=AMOUNT_MAX, flags=TF.PENDING)])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=1, flags=TF.PENDING)]) == [
        TS.OVERFLOWS_DEBITS_PENDING
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=c, cr=b, amount=1, flags=TF.PENDING)]) == [
        TS.OVERFLOWS_CREDITS_PENDING
    ]
    # Both would overflow: the debit side is reported first.
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, flags=TF.PENDING)]) == [
        TS.OVERFLOWS_DEBITS_PENDING
    ]
    assert await balances(ledger, a) == (AMOUNT_MAX, 0, 0, 0)


async def test_overflows_debits_posted_and_credits_posted(ledger):
    L = unique_ledger()
    a, b, c = await new_accounts(ledger, L, [AF.NONE] * 3)
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=b, amount=AMOUNT_MAX)])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=1)]) == [
        TS.OVERFLOWS_DEBITS_POSTED
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=c, cr=b, amount=1)]) == [
        TS.OVERFLOWS_CREDITS_POSTED
    ]
    # A pending transfer is also checked against the posted balances.
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=1, flags=TF.PENDING)]) == [
        TS.OVERFLOWS_DEBITS_POSTED
    ]


async def test_overflows_debits_and_credits(ledger):
    L = unique_ledger()
    a, b, c, d = await new_accounts(ledger, L, [AF.NONE] * 4)
    await create_transfers_ok(
        ledger,
        [
            transfer(ledger=L, dr=a, cr=b, amount=HALF),
            transfer(ledger=L, dr=a, cr=b, amount=HALF - 1, flags=TF.PENDING),
        ],
    )
    # a: debits_posted + debits_pending = 2^128 - 1, each part alone has room for 1 more.
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=1)]) == [
        TS.OVERFLOWS_DEBITS
    ]
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=d, cr=b, amount=1)]) == [
        TS.OVERFLOWS_CREDITS
    ]
    assert await balances(ledger, a) == (HALF - 1, HALF, 0, 0)


async def test_overflow_checks_come_before_limit_checks(ledger):
    L = unique_ledger()
    a, b, c = await new_accounts(ledger, L, [AF.NONE, AF.NONE, AF.CREDITS_MUST_NOT_EXCEED_DEBITS])
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=a, cr=b, amount=AMOUNT_MAX)])
    # Overflows a's debits and exceeds c's (zero) debits: the overflow is reported.
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=c, amount=1)]) == [
        TS.OVERFLOWS_DEBITS_POSTED
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 2**128),
        ("user_data_128", 2**128),
        ("user_data_64", 2**64),
        ("user_data_32", 2**32),
        ("ledger", 2**32),
        ("code", 2**16),
        ("timestamp", 2**64),
        ("debits_posted", 2**128),
        ("user_data_64", -1),
    ],
)
async def test_account_field_out_of_range_raises_and_writes_nothing(ledger, field, value):
    L = unique_ledger()
    valid = account(ledger=L)
    invalid = account(ledger=L)
    setattr(invalid, field, value)
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.create_accounts([valid, invalid])
    assert await ledger.lookup_accounts([valid.id]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 2**128),
        ("amount", -1),
        ("debit_account_id", 2**128),
        ("credit_account_id", 2**128),
        ("pending_id", 2**128),
        ("user_data_128", 2**128),
        ("user_data_64", 2**64),
        ("user_data_32", 2**32),
        ("timeout", 2**32),
        ("ledger", 2**32),
        ("code", 2**16),
    ],
)
async def test_transfer_field_out_of_range_raises_and_writes_nothing(ledger, field, value):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE])
    valid = transfer(ledger=L, dr=a, cr=b, amount=1)
    invalid = transfer(ledger=L, dr=a, cr=b, amount=1)
    setattr(invalid, field, value)
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.create_transfers([valid, invalid])
    assert await ledger.lookup_transfers([valid.id]) == []
    assert await balances(ledger, a) == (0, 0, 0, 0)


async def test_filter_fields_out_of_range_raise(ledger):
    L = unique_ledger()
    [a] = await new_accounts(ledger, L, [AF.NONE])
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.get_account_transfers(account_filter(a, limit=2**32))
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.get_account_balances(account_filter(a, code=2**16))
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.query_accounts(query_filter(ledger=L, user_data_128=2**128))
    with pytest.raises(tb.IntegerOverflowError):
        await ledger.query_transfers(query_filter(ledger=L, timestamp_max=-1))
