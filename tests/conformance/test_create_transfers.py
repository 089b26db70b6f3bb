"""Proves `create_transfers` validates every field as TigerBeetle 0.17 does, with the documented precedence.

Source: docs/reference/requests/create_transfers.md @ c1c325e5 (results in descending precedence; its
order equals the declaration order of `tb.CreateTransferStatus` in the 0.17.9 client) and
docs/reference/transfer.md @ 1a56b16f (field constraints, "Modes" table). Two-phase, balancing,
closing, imported, idempotency and overflow statuses have their own modules. `amount_must_not_be_zero`
does not exist in 0.17 (create_transfers.md: "Since `0.16.0`, zero-amount transfers are permitted").
"""

from __future__ import annotations

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    TF,
    TS,
    U128_MAX,
    balances,
    create_transfers_ok,
    get_transfer,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)


async def three_accounts(led):
    L = unique_ledger()
    bank, a, b = await new_accounts(led, L, [AF.NONE] * 3)
    return L, bank, a, b


async def pending_transfer(led, L, dr, cr, amount=100, **fields):
    p = transfer(ledger=L, dr=dr, cr=cr, amount=amount, flags=TF.PENDING, **fields)
    await create_transfers_ok(led, [p])
    return p


async def test_created_transfer_is_stored_and_moves_posted_balances(ledger):
    L, _, a, b = await three_accounts(ledger)
    t = transfer(
        ledger=L, dr=a, cr=b, amount=123, code=9, user_data_128=tb.id(), user_data_64=5, user_data_32=6
    )
    [result] = await ledger.create_transfers([t])
    assert result.status == TS.CREATED
    assert result.timestamp > 0

    stored = await get_transfer(ledger, t.id)
    assert stored.timestamp == result.timestamp
    assert (stored.debit_account_id, stored.credit_account_id, stored.amount, stored.ledger, stored.code) == (
        a,
        b,
        123,
        L,
        9,
    )
    assert (stored.user_data_128, stored.user_data_64, stored.user_data_32) == (t.user_data_128, 5, 6)
    assert (stored.pending_id, stored.timeout, stored.flags) == (0, 0, TF.NONE)
    assert await balances(ledger, a) == (0, 123, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 123)


async def test_zero_amount_transfer_is_created(ledger):
    # create_transfers.md `amount_must_not_be_zero`: "This error code is only returned to clients prior
    # to release 0.16.0. Since 0.16.0, zero-amount transfers are permitted."
    L, _, a, b = await three_accounts(ledger)
    t = transfer(ledger=L, dr=a, cr=b, amount=0)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert (await get_transfer(ledger, t.id)).amount == 0
    assert await balances(ledger, a) == (0, 0, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 0)


async def test_one_result_per_event_in_order_and_failures_are_not_created(ledger):
    L, _, a, b = await three_accounts(ledger)
    ok1 = transfer(ledger=L, dr=a, cr=b, amount=1)
    bad = transfer(ledger=L, dr=a, cr=b, amount=1, code=0)
    ok2 = transfer(ledger=L, dr=b, cr=a, amount=1)
    assert await transfer_statuses(ledger, [ok1, bad, ok2]) == [
        TS.CREATED,
        TS.CODE_MUST_NOT_BE_ZERO,
        TS.CREATED,
    ]
    assert [t.id for t in await ledger.lookup_transfers([ok1.id, bad.id, ok2.id])] == [ok1.id, ok2.id]
    assert await balances(ledger, a) == (0, 1, 0, 1)


async def test_failed_event_reports_the_timestamp_of_its_validation(ledger):
    # Python client README 0.17.9: "Failed transfers return the status code along with the timestamp
    # when the validation occurred."
    L, _, a, _ = await three_accounts(ledger)
    [result] = await ledger.create_transfers([transfer(ledger=L, dr=a, cr=a, amount=1)])
    assert result.status == TS.ACCOUNTS_MUST_BE_DIFFERENT
    assert result.timestamp > 0


async def test_timestamp_must_be_zero(ledger):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, timestamp=1)]) == [
        TS.TIMESTAMP_MUST_BE_ZERO
    ]


async def test_reserved_flag(ledger):
    L, _, a, b = await three_accounts(ledger)
    flags = TF(1 << 9)  # first bit after `imported`: padding in the 0.17 TransferFlags
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, flags=flags)]) == [
        TS.RESERVED_FLAG
    ]


@pytest.mark.parametrize(
    ("transfer_id", "status"), [(0, TS.ID_MUST_NOT_BE_ZERO), (U128_MAX, TS.ID_MUST_NOT_BE_INT_MAX)]
)
async def test_reserved_ids(ledger, transfer_id, status):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, id=transfer_id)]) == [
        status
    ]


@pytest.mark.parametrize(
    "flags",
    [
        TF.PENDING | TF.POST_PENDING_TRANSFER,
        TF.PENDING | TF.VOID_PENDING_TRANSFER,
        TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER,
        TF.POST_PENDING_TRANSFER | TF.BALANCING_DEBIT,
        TF.POST_PENDING_TRANSFER | TF.BALANCING_CREDIT,
        TF.VOID_PENDING_TRANSFER | TF.BALANCING_DEBIT,
        TF.VOID_PENDING_TRANSFER | TF.BALANCING_CREDIT,
        TF.POST_PENDING_TRANSFER | TF.CLOSING_DEBIT,
        TF.POST_PENDING_TRANSFER | TF.CLOSING_CREDIT,
        TF.VOID_PENDING_TRANSFER | TF.CLOSING_DEBIT,
        TF.VOID_PENDING_TRANSFER | TF.CLOSING_CREDIT,
    ],
    ids=lambda f: str(int(f)),
)
async def test_flags_are_mutually_exclusive(ledger, flags):
    # create_transfers.md flag compatibility table (✗ entries).
    L, _, a, b = await three_accounts(ledger)
    p = await pending_transfer(ledger, L, a, b)
    t = transfer(ledger=L, dr=a, cr=b, amount=1, pending_id=p.id, flags=flags)
    assert await transfer_statuses(ledger, [t]) == [TS.FLAGS_ARE_MUTUALLY_EXCLUSIVE]
    assert await balances(ledger, a) == (100, 0, 0, 0)


@pytest.mark.parametrize(
    "flags",
    [
        TF.PENDING | TF.BALANCING_DEBIT,
        TF.PENDING | TF.BALANCING_CREDIT,
        TF.PENDING | TF.CLOSING_DEBIT | TF.CLOSING_CREDIT,
        TF.BALANCING_DEBIT | TF.BALANCING_CREDIT,
        TF.PENDING | TF.BALANCING_DEBIT | TF.CLOSING_DEBIT,
    ],
    ids=lambda f: str(int(f)),
)
async def test_compatible_flags_are_accepted(ledger, flags):
    # create_transfers.md flag compatibility table (✓ entries).
    L, bank, a, b = await three_accounts(ledger)
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=bank, cr=a, amount=10)])
    await create_transfers_ok(ledger, [transfer(ledger=L, dr=b, cr=bank, amount=10)])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=5, flags=flags)]) == [
        TS.CREATED
    ]


@pytest.mark.parametrize(
    ("dr", "cr", "status"),
    [
        (0, "b", TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (U128_MAX, "b", TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        ("a", 0, TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        ("a", U128_MAX, TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        ("a", "a", TS.ACCOUNTS_MUST_BE_DIFFERENT),
    ],
)
async def test_account_id_checks(ledger, dr, cr, status):
    L, _, a, b = await three_accounts(ledger)
    named = {"a": a, "b": b}
    t = transfer(ledger=L, dr=named.get(dr, dr), cr=named.get(cr, cr), amount=1)
    assert await transfer_statuses(ledger, [t]) == [status]


async def test_pending_id_must_be_zero(ledger):
    L, _, a, b = await three_accounts(ledger)
    p = await pending_transfer(ledger, L, a, b)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, pending_id=p.id)]) == [
        TS.PENDING_ID_MUST_BE_ZERO
    ]


@pytest.mark.parametrize("flags", [TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER], ids=["post", "void"])
async def test_pending_id_must_not_be_zero(ledger, flags):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, flags=flags)]) == [
        TS.PENDING_ID_MUST_NOT_BE_ZERO
    ]


async def test_pending_id_must_not_be_int_max(ledger):
    L = unique_ledger()
    t = transfer(ledger=L, pending_id=U128_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t]) == [TS.PENDING_ID_MUST_NOT_BE_INT_MAX]


async def test_pending_id_must_be_different(ledger):
    tid = tb.id()
    t = transfer(ledger=unique_ledger(), id=tid, pending_id=tid, flags=TF.VOID_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t]) == [TS.PENDING_ID_MUST_BE_DIFFERENT]


async def test_timeout_reserved_for_pending_transfer(ledger):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, timeout=60)]) == [
        TS.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    ]
    # Post/void transfers have no timeout either (transfer.md "Modes": timeout "none" for post/void).
    p = await pending_transfer(ledger, L, a, b, timeout=3600)
    assert await transfer_statuses(
        ledger, [transfer(ledger=L, pending_id=p.id, timeout=60, amount=100, flags=TF.POST_PENDING_TRANSFER)]
    ) == [TS.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER]


@pytest.mark.parametrize(
    "flags", [TF.CLOSING_DEBIT, TF.CLOSING_CREDIT], ids=["closing_debit", "closing_credit"]
)
async def test_closing_transfer_must_be_pending(ledger, flags):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=0, flags=flags)]) == [
        TS.CLOSING_TRANSFER_MUST_BE_PENDING
    ]


async def test_ledger_must_not_be_zero(ledger):
    _, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=0, dr=a, cr=b, amount=1)]) == [
        TS.LEDGER_MUST_NOT_BE_ZERO
    ]


async def test_code_must_not_be_zero(ledger):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1, code=0)]) == [
        TS.CODE_MUST_NOT_BE_ZERO
    ]


async def test_debit_account_not_found(ledger):
    L, _, a, _ = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=tb.id(), cr=a, amount=1)]) == [
        TS.DEBIT_ACCOUNT_NOT_FOUND
    ]


async def test_credit_account_not_found(ledger):
    L, _, a, _ = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=tb.id(), amount=1)]) == [
        TS.CREDIT_ACCOUNT_NOT_FOUND
    ]


async def test_accounts_must_have_the_same_ledger(ledger):
    L, _, a, _ = await three_accounts(ledger)
    [other] = await new_accounts(ledger, L + 1, [AF.NONE])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=other, amount=1)]) == [
        TS.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
    ]


async def test_transfer_must_have_the_same_ledger_as_accounts(ledger):
    L, _, a, b = await three_accounts(ledger)
    assert await transfer_statuses(ledger, [transfer(ledger=L + 1, dr=a, cr=b, amount=1)]) == [
        TS.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
    ]


# --- precedence: when several errors apply, only the one listed first in create_transfers.md is returned.


async def test_precedence_timestamp_before_reserved_flag_and_id(ledger):
    t = transfer(ledger=0, id=0, timestamp=5, flags=TF(1 << 9))
    assert await transfer_statuses(ledger, [t]) == [TS.TIMESTAMP_MUST_BE_ZERO]


async def test_precedence_reserved_flag_before_id_must_not_be_zero(ledger):
    t = transfer(ledger=0, id=0, flags=TF(1 << 9) | TF.PENDING | TF.POST_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t]) == [TS.RESERVED_FLAG]


async def test_precedence_id_before_flags_are_mutually_exclusive(ledger):
    t = transfer(ledger=0, id=U128_MAX, flags=TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t]) == [TS.ID_MUST_NOT_BE_INT_MAX]


async def test_precedence_flags_are_mutually_exclusive_before_pending_id_checks(ledger):
    t = transfer(ledger=0, pending_id=0, timeout=5, flags=TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [t]) == [TS.FLAGS_ARE_MUTUALLY_EXCLUSIVE]


async def test_precedence_account_id_checks_in_field_order(ledger):
    L, _, a, _ = await three_accounts(ledger)
    cases = [
        (dict(dr=0, cr=0), TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (dict(dr=U128_MAX, cr=0), TS.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (dict(dr=a, cr=0, ledger=0), TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (dict(dr=a, cr=U128_MAX, ledger=0), TS.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (dict(dr=a, cr=a, ledger=0, code=0, pending_id=1, timeout=1), TS.ACCOUNTS_MUST_BE_DIFFERENT),
    ]
    for fields, status in cases:
        assert await transfer_statuses(ledger, [transfer(**{"ledger": L, "amount": 1, **fields})]) == [
            status
        ], fields


async def test_precedence_pending_id_timeout_closing_ledger_code(ledger):
    L, _, a, b = await three_accounts(ledger)
    missing = tb.id()
    cases = [
        (dict(pending_id=missing, timeout=1, ledger=0), TS.PENDING_ID_MUST_BE_ZERO),
        (dict(timeout=1, flags=TF.CLOSING_DEBIT, ledger=0), TS.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (dict(flags=TF.CLOSING_CREDIT, ledger=0), TS.CLOSING_TRANSFER_MUST_BE_PENDING),
        (dict(ledger=0, code=0), TS.LEDGER_MUST_NOT_BE_ZERO),
        (dict(code=0, dr=missing), TS.CODE_MUST_NOT_BE_ZERO),
    ]
    for fields, status in cases:
        t = transfer(**{"ledger": L, "dr": a, "cr": b, "amount": 1, **fields})
        assert await transfer_statuses(ledger, [t]) == [status], fields


async def test_precedence_account_lookups(ledger):
    L, _, a, _ = await three_accounts(ledger)
    [other] = await new_accounts(ledger, L + 1, [AF.NONE])
    cases = [
        (dict(dr=tb.id(), cr=tb.id()), TS.DEBIT_ACCOUNT_NOT_FOUND),
        (dict(dr=other, cr=tb.id()), TS.CREDIT_ACCOUNT_NOT_FOUND),
        (dict(dr=a, cr=other, ledger=L + 2), TS.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER),
    ]
    for fields, status in cases:
        t = transfer(**{"ledger": L, "amount": 1, **fields})
        assert await transfer_statuses(ledger, [t]) == [status], fields


async def test_precedence_exceeds_credits_before_exceeds_debits(ledger):
    L = unique_ledger()
    dr, cr = await new_accounts(
        ledger, L, [AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.CREDITS_MUST_NOT_EXCEED_DEBITS]
    )
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=dr, cr=cr, amount=1)]) == [
        TS.EXCEEDS_CREDITS
    ]
