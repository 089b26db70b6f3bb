"""Proves ids are idempotency keys: `exists`, each `exists_with_different_*`, and `id_already_failed`
after transient errors.

Sources: docs/reference/requests/create_transfers.md @ c1c325e5 (`exists`, `exists_with_different_*`,
`id_already_failed`: "A previous transfer with the same id failed due to one of the following
transient errors: debit_account_not_found, credit_account_not_found, pending_transfer_not_found,
exceeds_credits, exceeds_debits, debit_account_already_closed, credit_account_already_closed ... If
the application intends to submit the transfer again even after a transient error, it must generate a
new idempotency id"), docs/reference/api-changes.md (exists returns the original timestamp).
"""

from __future__ import annotations

import dataclasses

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    AMOUNT_MAX,
    AS,
    TF,
    TS,
    account,
    account_statuses,
    balances,
    create_accounts_ok,
    create_transfers_ok,
    fund,
    new_accounts,
    post,
    transfer,
    transfer_statuses,
    unique_ledger,
    void,
)


async def setup(led):
    L = unique_ledger()
    bank, a, b, c = await new_accounts(led, L, [AF.NONE] * 4)
    return L, bank, a, b, c


async def test_exists_returns_original_timestamp_and_moves_nothing(ledger):
    L, _, a, b, _ = await setup(ledger)
    t = transfer(ledger=L, dr=a, cr=b, amount=10)
    [first] = await ledger.create_transfers([t])
    [again] = await ledger.create_transfers([dataclasses.replace(t)])
    assert (first.status, again.status) == (TS.CREATED, TS.EXISTS)
    assert again.timestamp == first.timestamp
    assert await balances(ledger, a) == (0, 10, 0, 0)


async def test_same_id_twice_in_one_batch(ledger):
    L, _, a, b, _ = await setup(ledger)
    t = transfer(ledger=L, dr=a, cr=b, amount=10)
    results = await ledger.create_transfers([t, dataclasses.replace(t)])
    assert [r.status for r in results] == [TS.CREATED, TS.EXISTS]
    assert results[1].timestamp == results[0].timestamp
    assert await balances(ledger, a) == (0, 10, 0, 0)


def _changed(field, base, other_account):
    return {
        "flags": TF.PENDING | TF.BALANCING_DEBIT,
        "pending_id": tb.id(),
        "timeout": base.timeout + 1,
        "debit_account_id": other_account,
        "credit_account_id": other_account,
        "amount": base.amount + 1,
        "user_data_128": base.user_data_128 + 1,
        "user_data_64": base.user_data_64 + 1,
        "user_data_32": base.user_data_32 + 1,
        "ledger": base.ledger + 1,
        "code": base.code + 1,
    }[field]


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("flags", TS.EXISTS_WITH_DIFFERENT_FLAGS),
        ("pending_id", TS.EXISTS_WITH_DIFFERENT_PENDING_ID),
        ("timeout", TS.EXISTS_WITH_DIFFERENT_TIMEOUT),
        ("debit_account_id", TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        ("credit_account_id", TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        ("amount", TS.EXISTS_WITH_DIFFERENT_AMOUNT),
        ("user_data_128", TS.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ("user_data_64", TS.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ("user_data_32", TS.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ("ledger", TS.EXISTS_WITH_DIFFERENT_LEDGER),
        ("code", TS.EXISTS_WITH_DIFFERENT_CODE),
    ],
)
async def test_exists_with_different_field(ledger, field, status):
    L, _, a, b, c = await setup(ledger)
    base = transfer(
        ledger=L,
        dr=a,
        cr=b,
        amount=10,
        flags=TF.PENDING,
        timeout=3600,
        user_data_128=11,
        user_data_64=12,
        user_data_32=13,
    )
    await create_transfers_ok(ledger, [base])
    retry = dataclasses.replace(base, **{field: _changed(field, base, c)})
    assert await transfer_statuses(ledger, [retry]) == [status]
    assert await balances(ledger, a) == (10, 0, 0, 0)


async def test_precedence_among_exists_with_different(ledger):
    L, _, a, b, c = await setup(ledger)
    base = transfer(
        ledger=L,
        dr=a,
        cr=b,
        amount=10,
        flags=TF.PENDING,
        timeout=3600,
        user_data_128=11,
        user_data_64=12,
        user_data_32=13,
    )
    await create_transfers_ok(ledger, [base])
    order = [  # create_transfers.md lists them in this order
        ("flags", TS.EXISTS_WITH_DIFFERENT_FLAGS),
        ("pending_id", TS.EXISTS_WITH_DIFFERENT_PENDING_ID),
        ("timeout", TS.EXISTS_WITH_DIFFERENT_TIMEOUT),
        ("debit_account_id", TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        ("credit_account_id", TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        ("amount", TS.EXISTS_WITH_DIFFERENT_AMOUNT),
        ("user_data_128", TS.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ("user_data_64", TS.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ("user_data_32", TS.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ("ledger", TS.EXISTS_WITH_DIFFERENT_LEDGER),
        ("code", TS.EXISTS_WITH_DIFFERENT_CODE),
    ]
    retry = dataclasses.replace(base, **{f: _changed(f, base, c) for f, _ in order})
    for field, status in order:
        assert await transfer_statuses(ledger, [retry]) == [status], field
        retry = dataclasses.replace(retry, **{field: getattr(base, field)})
    assert await transfer_statuses(ledger, [retry]) == [TS.EXISTS]


async def test_exists_checks_come_before_field_validation(ledger):
    L, _, a, b, _ = await setup(ledger)
    base = transfer(ledger=L, dr=a, cr=b, amount=10)
    await create_transfers_ok(ledger, [base])
    cases = [
        (dict(debit_account_id=0), TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        (
            dict(credit_account_id=a),
            TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
        ),  # also accounts_must_be_different
        (dict(timeout=5), TS.EXISTS_WITH_DIFFERENT_TIMEOUT),  # also timeout_reserved_for_pending_transfer
        (dict(ledger=0), TS.EXISTS_WITH_DIFFERENT_LEDGER),  # also ledger_must_not_be_zero
        (dict(code=0), TS.EXISTS_WITH_DIFFERENT_CODE),  # also code_must_not_be_zero
        (
            dict(flags=TF.CLOSING_DEBIT),
            TS.EXISTS_WITH_DIFFERENT_FLAGS,
        ),  # also closing_transfer_must_be_pending
    ]
    for fields, status in cases:
        assert await transfer_statuses(ledger, [dataclasses.replace(base, **fields)]) == [status], fields


async def test_timestamp_must_be_zero_before_exists(ledger):
    L, _, a, b, _ = await setup(ledger)
    base = transfer(ledger=L, dr=a, cr=b, amount=10)
    [created] = await create_transfers_ok(ledger, [base])
    assert await transfer_statuses(ledger, [dataclasses.replace(base, timestamp=created.timestamp)]) == [
        TS.TIMESTAMP_MUST_BE_ZERO
    ]


async def test_retried_partial_post_and_void(ledger):
    L, _, a, b, _ = await setup(ledger)
    p1 = transfer(ledger=L, dr=a, cr=b, amount=100, flags=TF.PENDING)
    p2 = transfer(ledger=L, dr=a, cr=b, amount=100, flags=TF.PENDING)
    await create_transfers_ok(ledger, [p1, p2])
    partial, cancel = post(p1, 40), void(p2)
    await create_transfers_ok(ledger, [partial, cancel])
    assert await transfer_statuses(ledger, [dataclasses.replace(partial), dataclasses.replace(cancel)]) == [
        TS.EXISTS,
        TS.EXISTS,
    ]
    assert await transfer_statuses(ledger, [dataclasses.replace(partial, amount=50)]) == [
        TS.EXISTS_WITH_DIFFERENT_AMOUNT
    ]
    assert await balances(ledger, a) == (0, 40, 0, 0)


async def test_retried_full_post(ledger):
    L, _, a, b, _ = await setup(ledger)
    p = transfer(ledger=L, dr=a, cr=b, amount=100, flags=TF.PENDING)
    await create_transfers_ok(ledger, [p])
    full = post(p, AMOUNT_MAX)
    await create_transfers_ok(ledger, [full])
    assert await transfer_statuses(ledger, [dataclasses.replace(full)]) == [TS.EXISTS]
    assert await transfer_statuses(ledger, [dataclasses.replace(full, amount=100)]) == [TS.EXISTS]
    assert await transfer_statuses(ledger, [dataclasses.replace(full, amount=99)]) == [
        TS.EXISTS_WITH_DIFFERENT_AMOUNT
    ]
    assert await balances(ledger, a) == (0, 100, 0, 0)


async def test_retried_post_with_explicit_fields_equal_to_the_recorded_ones_exists(ledger):
    L, _, a, b, _ = await setup(ledger)
    p = transfer(ledger=L, dr=a, cr=b, amount=100, flags=TF.PENDING, user_data_64=77)
    await create_transfers_ok(ledger, [p])
    bare = post(p, 100)
    await create_transfers_ok(ledger, [bare])
    explicit = dataclasses.replace(
        bare, debit_account_id=a, credit_account_id=b, ledger=L, code=p.code, user_data_64=77
    )
    assert await transfer_statuses(ledger, [explicit]) == [TS.EXISTS]


# --- id_already_failed


async def test_id_already_failed_after_exceeds_credits_even_after_funds_arrive(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=b, amount=10)
    assert await transfer_statuses(ledger, [t]) == [TS.EXCEEDS_CREDITS]
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.ID_ALREADY_FAILED]
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.ID_ALREADY_FAILED]  # final
    assert await ledger.lookup_transfers([t.id]) == []
    assert await transfer_statuses(ledger, [dataclasses.replace(t, id=tb.id())]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 10, 0, 100)


async def test_id_already_failed_after_exceeds_debits(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, AF.NONE, AF.CREDITS_MUST_NOT_EXCEED_DEBITS])
    t = transfer(ledger=L, dr=a, cr=b, amount=10)
    assert await transfer_statuses(ledger, [t]) == [TS.EXCEEDS_DEBITS]
    await fund(ledger, ledger=L, source=b, target=bank, amount=100)
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.ID_ALREADY_FAILED]


@pytest.mark.parametrize("side", ["debit", "credit"])
async def test_id_already_failed_after_account_not_found(ledger, side):
    L = unique_ledger()
    [existing] = await new_accounts(ledger, L, [AF.NONE])
    missing = account(ledger=L)
    dr, cr = (missing.id, existing) if side == "debit" else (existing, missing.id)
    t = transfer(ledger=L, dr=dr, cr=cr, amount=1)
    expected = TS.DEBIT_ACCOUNT_NOT_FOUND if side == "debit" else TS.CREDIT_ACCOUNT_NOT_FOUND
    assert await transfer_statuses(ledger, [t]) == [expected]
    await create_accounts_ok(ledger, [missing])
    assert await transfer_statuses(ledger, [dataclasses.replace(t)]) == [TS.ID_ALREADY_FAILED]


async def test_id_already_failed_after_pending_transfer_not_found(ledger):
    L, _, a, b, _ = await setup(ledger)
    p = transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING)
    early_post = post(p)
    assert await transfer_statuses(ledger, [early_post]) == [TS.PENDING_TRANSFER_NOT_FOUND]
    await create_transfers_ok(ledger, [p])
    assert await transfer_statuses(ledger, [dataclasses.replace(early_post)]) == [TS.ID_ALREADY_FAILED]
    assert await balances(ledger, a) == (10, 0, 0, 0)


async def test_id_already_failed_takes_precedence_over_validation(ledger):
    L = unique_ledger()
    a, b = await new_accounts(ledger, L, [AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    t = transfer(ledger=L, dr=a, cr=b, amount=10)
    assert await transfer_statuses(ledger, [t]) == [TS.EXCEEDS_CREDITS]
    garbage = dataclasses.replace(
        t,
        debit_account_id=0,
        credit_account_id=0,
        ledger=0,
        code=0,
        flags=TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER,
    )
    assert await transfer_statuses(ledger, [garbage]) == [TS.ID_ALREADY_FAILED]
    # ... but not over the checks listed before it.
    assert await transfer_statuses(ledger, [dataclasses.replace(t, timestamp=1)]) == [
        TS.TIMESTAMP_MUST_BE_ZERO
    ]
    assert await transfer_statuses(ledger, [dataclasses.replace(t, flags=TF(1 << 9))]) == [TS.RESERVED_FLAG]


async def test_transient_failure_inside_a_chain_burns_only_the_failing_id(ledger):
    L = unique_ledger()
    bank, a, b = await new_accounts(ledger, L, [AF.NONE, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    first = transfer(ledger=L, dr=bank, cr=b, amount=1, flags=TF.LINKED)
    failing = transfer(ledger=L, dr=a, cr=b, amount=5)
    assert await transfer_statuses(ledger, [first, failing]) == [TS.LINKED_EVENT_FAILED, TS.EXCEEDS_CREDITS]
    await fund(ledger, ledger=L, source=bank, target=a, amount=5)
    assert await transfer_statuses(ledger, [first, dataclasses.replace(failing)]) == [
        TS.LINKED_EVENT_FAILED,
        TS.ID_ALREADY_FAILED,
    ]
    assert await transfer_statuses(ledger, [first, dataclasses.replace(failing, id=tb.id())]) == [
        TS.CREATED,
        TS.CREATED,
    ]


@pytest.mark.parametrize("cause", ["code_zero", "ledger_mismatch", "exceeds_pending_amount", "chain_open"])
async def test_non_transient_failures_do_not_burn_the_id(ledger, cause):
    # id_already_failed applies only to the transient errors; "correcting a previously rejected
    # malformed request" with the same id must work.
    L, _, a, b, _ = await setup(ledger)
    if cause == "exceeds_pending_amount":
        p = transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING)
        await create_transfers_ok(ledger, [p])
        bad, good = post(p, 11), None
        good = dataclasses.replace(bad, amount=10)
    else:
        good = transfer(ledger=L, dr=a, cr=b, amount=10)
        bad = {
            "code_zero": dataclasses.replace(good, code=0),
            "ledger_mismatch": dataclasses.replace(good, ledger=L + 1),
            "chain_open": dataclasses.replace(good, flags=TF.LINKED),
        }[cause]
    assert (await transfer_statuses(ledger, [bad]))[0] != TS.CREATED
    assert await transfer_statuses(ledger, [good]) == [TS.CREATED]


async def test_failed_account_ids_are_never_burned(ledger):
    # Only create_transfers has transient errors; a corrected account with the same id is created.
    a = account(ledger=unique_ledger(), code=0)
    assert await account_statuses(ledger, [a]) == [AS.CODE_MUST_NOT_BE_ZERO]
    assert await account_statuses(ledger, [dataclasses.replace(a, code=1)]) == [AS.CREATED]
