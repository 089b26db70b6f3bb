"""Proves `create_accounts` returns every reachable `CreateAccountStatus`, in TigerBeetle's documented
precedence.

Source: docs/reference/requests/create_accounts.md @ 82d424a7 ("Results are listed in this section
in order of descending precedence"), account.md @ 1a56b16f; 0.17 renames `ok` to `created` and returns
one result per event (docs/reference/api-changes.md). `reserved_field` cannot be produced through the
client: `tb.Account` has no `reserved` attribute and `CAccount.from_param` never sets it, so it is
always zero on the wire; it is therefore not tested.
"""

from __future__ import annotations

import dataclasses

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    AS,
    U128_MAX,
    account,
    account_statuses,
    create_accounts_ok,
    get_account,
    unique_ledger,
    unique_u32,
    unique_u64,
)


async def test_created_account_is_stored_with_zero_balances(ledger):
    L = unique_ledger()
    a = account(
        ledger=L,
        code=42,
        flags=AF.HISTORY,
        user_data_128=tb.id(),
        user_data_64=unique_u64(),
        user_data_32=unique_u32(),
    )
    [result] = await ledger.create_accounts([a])
    assert result.status == AS.CREATED
    assert result.timestamp > 0

    stored = await get_account(ledger, a.id)
    assert stored.timestamp == result.timestamp  # the result carries the assigned timestamp
    assert (stored.id, stored.ledger, stored.code, stored.flags) == (a.id, L, 42, AF.HISTORY)
    assert (stored.user_data_128, stored.user_data_64, stored.user_data_32) == (
        a.user_data_128,
        a.user_data_64,
        a.user_data_32,
    )
    assert (stored.debits_pending, stored.debits_posted, stored.credits_pending, stored.credits_posted) == (
        0,
        0,
        0,
        0,
    )


async def test_one_result_per_event_in_order_and_failures_are_not_created(ledger):
    L = unique_ledger()
    good1, bad, good2 = account(ledger=L), account(ledger=L, code=0), account(ledger=L)
    results = await ledger.create_accounts([good1, bad, good2])
    assert [r.status for r in results] == [AS.CREATED, AS.CODE_MUST_NOT_BE_ZERO, AS.CREATED]
    found = await ledger.lookup_accounts([good1.id, bad.id, good2.id])
    assert [a.id for a in found] == [good1.id, good2.id]


async def test_failed_event_reports_the_timestamp_of_its_validation(ledger):
    # Python client README 0.17.9: "Failed accounts return the status code along with the timestamp
    # when the validation occurred."
    [result] = await ledger.create_accounts([account(ledger=0)])
    assert result.status == AS.LEDGER_MUST_NOT_BE_ZERO
    assert result.timestamp > 0


async def test_exists_returns_the_timestamp_of_the_original(ledger):
    # api-changes.md: "`exists` now reports the same `timestamp` returned by `created`".
    a = account(ledger=unique_ledger())
    [first] = await ledger.create_accounts([a])
    [again] = await ledger.create_accounts([dataclasses.replace(a)])
    assert first.status == AS.CREATED
    assert again.status == AS.EXISTS
    assert again.timestamp == first.timestamp


async def test_same_id_twice_in_one_batch_is_created_then_exists(ledger):
    a = account(ledger=unique_ledger())
    results = await ledger.create_accounts([a, dataclasses.replace(a)])
    assert [r.status for r in results] == [AS.CREATED, AS.EXISTS]
    assert results[1].timestamp == results[0].timestamp


async def test_timestamp_must_be_zero(ledger):
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), timestamp=1)]) == [
        AS.TIMESTAMP_MUST_BE_ZERO
    ]


async def test_reserved_flag(ledger):
    flags = AF(1 << 6)  # first bit after `closed`: padding in the 0.17 AccountFlags
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), flags=flags)]) == [
        AS.RESERVED_FLAG
    ]


@pytest.mark.parametrize(
    ("account_id", "status"), [(0, AS.ID_MUST_NOT_BE_ZERO), (U128_MAX, AS.ID_MUST_NOT_BE_INT_MAX)]
)
async def test_reserved_ids(ledger, account_id, status):
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), id=account_id)]) == [status]


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("flags", AS.EXISTS_WITH_DIFFERENT_FLAGS),
        ("user_data_128", AS.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ("user_data_64", AS.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ("user_data_32", AS.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ("ledger", AS.EXISTS_WITH_DIFFERENT_LEDGER),
        ("code", AS.EXISTS_WITH_DIFFERENT_CODE),
    ],
)
async def test_exists_with_different_field(ledger, field, status):
    original = account(
        ledger=unique_ledger(), flags=AF.HISTORY, user_data_128=5, user_data_64=6, user_data_32=7
    )
    await create_accounts_ok(ledger, [original])
    changed = {
        "flags": AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS,
        "user_data_128": 50,
        "user_data_64": 60,
        "user_data_32": 70,
        "ledger": original.ledger + 1,
        "code": original.code + 1,
    }[field]
    retry = dataclasses.replace(original, **{field: changed})
    assert await account_statuses(ledger, [retry]) == [status]
    assert getattr(await get_account(ledger, original.id), field) == getattr(original, field)


async def test_flags_are_mutually_exclusive(ledger):
    flags = AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), flags=flags)]) == [
        AS.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    ]


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("debits_pending", AS.DEBITS_PENDING_MUST_BE_ZERO),
        ("debits_posted", AS.DEBITS_POSTED_MUST_BE_ZERO),
        ("credits_pending", AS.CREDITS_PENDING_MUST_BE_ZERO),
        ("credits_posted", AS.CREDITS_POSTED_MUST_BE_ZERO),
    ],
)
async def test_balances_must_be_zero(ledger, field, status):
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), **{field: 1})]) == [status]


async def test_ledger_must_not_be_zero(ledger):
    assert await account_statuses(ledger, [account(ledger=0)]) == [AS.LEDGER_MUST_NOT_BE_ZERO]


async def test_code_must_not_be_zero(ledger):
    assert await account_statuses(ledger, [account(ledger=unique_ledger(), code=0)]) == [
        AS.CODE_MUST_NOT_BE_ZERO
    ]


# --- precedence: when several errors apply, only the one listed first in create_accounts.md is returned.


async def test_precedence_reserved_flag_before_id_must_not_be_zero(ledger):
    a = account(ledger=0, code=0, id=0, flags=AF(1 << 6))
    assert await account_statuses(ledger, [a]) == [AS.RESERVED_FLAG]


async def test_precedence_id_must_not_be_zero_before_field_errors(ledger):
    a = account(
        ledger=0, code=0, id=0, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    )
    assert await account_statuses(ledger, [a]) == [AS.ID_MUST_NOT_BE_ZERO]


async def test_precedence_timestamp_must_be_zero_before_exists(ledger):
    a = account(ledger=unique_ledger())
    await create_accounts_ok(ledger, [a])
    stored = await get_account(ledger, a.id)  # carries the assigned timestamp
    assert await account_statuses(ledger, [stored]) == [AS.TIMESTAMP_MUST_BE_ZERO]


async def test_precedence_exists_ignores_balance_fields(ledger):
    # create_accounts.md `exists`: "With the possible exception of the following fields, the existing
    # account is identical ...: timestamp, debits_pending, debits_posted, credits_pending, credits_posted"
    # and `exists` is listed before `debits_pending_must_be_zero`.
    a = account(ledger=unique_ledger())
    await create_accounts_ok(ledger, [a])
    retry = dataclasses.replace(a, debits_pending=1, debits_posted=2, credits_pending=3, credits_posted=4)
    assert await account_statuses(ledger, [retry]) == [AS.EXISTS]


async def test_precedence_among_exists_with_different(ledger):
    a = account(ledger=unique_ledger(), user_data_128=1, user_data_64=1, user_data_32=1)
    await create_accounts_ok(ledger, [a])
    everything = dataclasses.replace(
        a,
        flags=AF.HISTORY,
        user_data_128=2,
        user_data_64=2,
        user_data_32=2,
        ledger=a.ledger + 1,
        code=a.code + 1,
    )
    expected_order = [
        ("flags", AS.EXISTS_WITH_DIFFERENT_FLAGS),
        ("user_data_128", AS.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ("user_data_64", AS.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ("user_data_32", AS.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ("ledger", AS.EXISTS_WITH_DIFFERENT_LEDGER),
        ("code", AS.EXISTS_WITH_DIFFERENT_CODE),
    ]
    retry = everything
    for field, status in expected_order:
        assert await account_statuses(ledger, [retry]) == [status], field
        retry = dataclasses.replace(retry, **{field: getattr(a, field)})
    assert await account_statuses(ledger, [retry]) == [AS.EXISTS]


async def test_precedence_exists_with_different_before_flag_and_zero_checks(ledger):
    a = account(ledger=unique_ledger())
    await create_accounts_ok(ledger, [a])
    both = AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert await account_statuses(ledger, [dataclasses.replace(a, flags=both)]) == [
        AS.EXISTS_WITH_DIFFERENT_FLAGS
    ]
    assert await account_statuses(ledger, [dataclasses.replace(a, ledger=0)]) == [
        AS.EXISTS_WITH_DIFFERENT_LEDGER
    ]
    assert await account_statuses(ledger, [dataclasses.replace(a, code=0)]) == [AS.EXISTS_WITH_DIFFERENT_CODE]


async def test_precedence_flags_are_mutually_exclusive_before_balances(ledger):
    a = account(
        ledger=0,
        code=0,
        debits_pending=1,
        flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
    )
    assert await account_statuses(ledger, [a]) == [AS.FLAGS_ARE_MUTUALLY_EXCLUSIVE]


async def test_precedence_of_zero_checks_follows_field_order(ledger):
    L = unique_ledger()
    cases = [
        (dict(debits_pending=1, debits_posted=1, ledger=0), AS.DEBITS_PENDING_MUST_BE_ZERO),
        (dict(debits_posted=1, credits_pending=1), AS.DEBITS_POSTED_MUST_BE_ZERO),
        (dict(credits_pending=1, credits_posted=1), AS.CREDITS_PENDING_MUST_BE_ZERO),
        (dict(credits_posted=1, ledger=0), AS.CREDITS_POSTED_MUST_BE_ZERO),
        (dict(ledger=0, code=0), AS.LEDGER_MUST_NOT_BE_ZERO),
    ]
    for fields, status in cases:
        base = {"ledger": L, **fields}
        assert await account_statuses(ledger, [account(**base)]) == [status], fields
