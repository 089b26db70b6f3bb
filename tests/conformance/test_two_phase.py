"""Proves pending transfers reserve, post (fully or partially), void and expire exactly as TigerBeetle
0.17 documents.

Sources: docs/coding/two-phase-transfers.md @ a871b022; docs/reference/transfer.md @ 1a56b16f (`amount`,
`timeout`, `user_data_*` of post/void); docs/reference/requests/create_transfers.md @ c1c325e5.
Posting with `amount` 0 posts ZERO since client 0.16.0: transfer.md says the amount posted is "the
pending transfer's amount, when the posted transfer's `amount` is `AMOUNT_MAX`" and "the posting
transfer's amount, when ... less than or equal to the pending transfer's amount"; "amount 0 posts the
full amount" survives only in the "Client release < 0.16.0" notes. Voiding with `amount` 0 voids the
full amount ("If `amount` is zero, it will be automatically be set to the pending transfer's `amount`").
"""

from __future__ import annotations

import asyncio
import time

import pytest
import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    AMOUNT_MAX,
    TF,
    TS,
    account_filter,
    balances,
    create_transfers_ok,
    fund,
    get_transfer,
    new_accounts,
    post,
    transfer,
    transfer_statuses,
    unique_ledger,
    void,
)


async def setup(led, a_flags=AF.NONE, b_flags=AF.NONE):
    L = unique_ledger()
    bank, a, b = await new_accounts(led, L, [AF.NONE, a_flags, b_flags])
    return L, bank, a, b


async def make_pending(led, L, dr, cr, amount=100, **fields):
    p = transfer(ledger=L, dr=dr, cr=cr, amount=amount, flags=TF.PENDING, **fields)
    await create_transfers_ok(led, [p])
    return p


async def test_pending_reserves_without_posting(ledger):
    L, _, a, b = await setup(ledger)
    await make_pending(ledger, L, a, b, 100)
    assert await balances(ledger, a) == (100, 0, 0, 0)
    assert await balances(ledger, b) == (0, 0, 100, 0)


@pytest.mark.parametrize("amount", [AMOUNT_MAX, 100], ids=["amount_max", "exact_amount"])
async def test_post_full_amount(ledger, amount):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100, code=11)
    t = post(p, amount)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 100, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 100)
    stored = await get_transfer(ledger, t.id)
    # transfer.md: zero debit/credit account ids, ledger and code are set from the pending transfer.
    assert (stored.debit_account_id, stored.credit_account_id, stored.ledger, stored.code) == (a, b, L, 11)
    assert (stored.amount, stored.pending_id, stored.timeout) == (100, p.id, 0)
    assert stored.flags == TF.POST_PENDING_TRANSFER


async def test_partial_post_restores_the_remainder(ledger):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 123)
    t = post(p, 100)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 100, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 100)
    assert (await get_transfer(ledger, t.id)).amount == 100


async def test_post_with_amount_zero_posts_zero(ledger):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    t = post(p, 0)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 0, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 0)
    assert (await get_transfer(ledger, t.id)).amount == 0
    # The pending transfer is resolved (posted), even though nothing moved.
    assert await transfer_statuses(ledger, [void(p)]) == [TS.PENDING_TRANSFER_ALREADY_POSTED]


@pytest.mark.parametrize("amount", [0, 100], ids=["amount_zero", "exact_amount"])
async def test_void_releases_the_full_amount(ledger, amount):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    t = void(p, amount)
    assert await transfer_statuses(ledger, [t]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 0, 0, 0)
    assert await balances(ledger, b) == (0, 0, 0, 0)
    stored = await get_transfer(ledger, t.id)
    assert (stored.amount, stored.debit_account_id, stored.credit_account_id) == (100, a, b)
    assert stored.flags == TF.VOID_PENDING_TRANSFER


async def test_post_or_void_with_matching_optional_fields(ledger):
    L, _, a, b = await setup(ledger)
    p1 = await make_pending(ledger, L, a, b, 10, code=3)
    p2 = await make_pending(ledger, L, a, b, 10, code=3)
    same = dict(debit_account_id=a, credit_account_id=b, ledger=L, code=3)
    assert await transfer_statuses(ledger, [post(p1, 10, **same), void(p2, 10, **same)]) == [
        TS.CREATED,
        TS.CREATED,
    ]


async def test_post_and_void_inherit_user_data_when_zero(ledger):
    L, _, a, b = await setup(ledger)
    p1 = await make_pending(ledger, L, a, b, 10, user_data_128=111, user_data_64=222, user_data_32=333)
    p2 = await make_pending(ledger, L, a, b, 10, user_data_128=111, user_data_64=222, user_data_32=333)
    inherit, override = post(p1), void(p2, user_data_128=7, user_data_64=8, user_data_32=9)
    await create_transfers_ok(ledger, [inherit, override])
    got = await get_transfer(ledger, inherit.id)
    assert (got.user_data_128, got.user_data_64, got.user_data_32) == (111, 222, 333)
    got = await get_transfer(ledger, override.id)
    assert (got.user_data_128, got.user_data_64, got.user_data_32) == (7, 8, 9)


async def test_exceeds_pending_transfer_amount(ledger):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    assert await transfer_statuses(ledger, [post(p, 101)]) == [TS.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert await transfer_statuses(ledger, [void(p, 101)]) == [TS.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert await balances(ledger, a) == (100, 0, 0, 0)


async def test_pending_transfer_has_different_amount(ledger):
    # "To partially void a transfer, create a posting transfer" — a void must be 0 or the full amount.
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    assert await transfer_statuses(ledger, [void(p, 99)]) == [TS.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT]
    assert await balances(ledger, a) == (100, 0, 0, 0)


@pytest.mark.parametrize(
    ("first", "second", "status"),
    [
        (post, post, TS.PENDING_TRANSFER_ALREADY_POSTED),
        (post, void, TS.PENDING_TRANSFER_ALREADY_POSTED),
        (void, post, TS.PENDING_TRANSFER_ALREADY_VOIDED),
        (void, void, TS.PENDING_TRANSFER_ALREADY_VOIDED),
    ],
    ids=["post_post", "post_void", "void_post", "void_void"],
)
async def test_pending_transfer_resolves_at_most_once(ledger, first, second, status):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    await create_transfers_ok(ledger, [first(p)])
    after_first = await balances(ledger, a)
    assert await transfer_statuses(ledger, [second(p)]) == [status]
    assert await balances(ledger, a) == after_first


async def test_post_and_void_of_the_same_pending_in_one_batch(ledger):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    assert await transfer_statuses(ledger, [post(p, 60), void(p)]) == [
        TS.CREATED,
        TS.PENDING_TRANSFER_ALREADY_POSTED,
    ]
    assert await balances(ledger, a) == (0, 60, 0, 0)


async def test_pending_transfer_not_found(ledger):
    L = unique_ledger()
    assert await transfer_statuses(
        ledger, [transfer(ledger=L, pending_id=tb.id(), flags=TF.VOID_PENDING_TRANSFER)]
    ) == [TS.PENDING_TRANSFER_NOT_FOUND]


async def test_pending_transfer_not_pending(ledger):
    L, _, a, b = await setup(ledger)
    single = transfer(ledger=L, dr=a, cr=b, amount=5)
    await create_transfers_ok(ledger, [single])
    assert await transfer_statuses(ledger, [post(single, 5)]) == [TS.PENDING_TRANSFER_NOT_PENDING]


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("debit_account_id", TS.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        ("credit_account_id", TS.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
        ("ledger", TS.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER),
        ("code", TS.PENDING_TRANSFER_HAS_DIFFERENT_CODE),
    ],
)
@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
async def test_pending_transfer_has_different_field(ledger, field, status, resolve):
    L, bank, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100)
    wrong = {"debit_account_id": bank, "credit_account_id": bank, "ledger": L + 1, "code": p.code + 1}[field]
    assert await transfer_statuses(ledger, [resolve(p, **{field: wrong})]) == [status]


async def test_precedence_of_post_checks(ledger):
    L, bank, a, b = await setup(ledger)
    single = transfer(ledger=L, dr=a, cr=b, amount=5)
    p = await make_pending(ledger, L, a, b, 100)
    await create_transfers_ok(ledger, [single])
    wrong_all = dict(debit_account_id=bank, credit_account_id=bank, ledger=L + 1, code=p.code + 1)
    assert await transfer_statuses(ledger, [post(single, 500, **wrong_all)]) == [
        TS.PENDING_TRANSFER_NOT_PENDING
    ]
    expected = [
        ("debit_account_id", a, TS.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        ("credit_account_id", b, TS.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
        ("ledger", L, TS.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER),
        ("code", p.code, TS.PENDING_TRANSFER_HAS_DIFFERENT_CODE),
    ]
    fields = dict(wrong_all)
    for name, right, status in expected:
        assert await transfer_statuses(ledger, [post(p, 500, **fields)]) == [status], name
        fields[name] = right
    assert await transfer_statuses(ledger, [post(p, 500, **fields)]) == [TS.EXCEEDS_PENDING_TRANSFER_AMOUNT]


async def test_precedence_amount_checks_before_already_resolved(ledger):
    L, _, a, b = await setup(ledger)
    posted, voided = await make_pending(ledger, L, a, b, 100), await make_pending(ledger, L, a, b, 100)
    await create_transfers_ok(ledger, [post(posted), void(voided)])
    assert await transfer_statuses(ledger, [post(posted, 101)]) == [TS.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert await transfer_statuses(ledger, [void(voided, 50)]) == [TS.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT]


async def test_pending_with_timeout_can_be_posted_before_it_expires(ledger):
    L, _, a, b = await setup(ledger)
    p = await make_pending(ledger, L, a, b, 100, timeout=3600)
    assert (await get_transfer(ledger, p.id)).timeout == 3600
    assert await transfer_statuses(ledger, [post(p)]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 100, 0, 0)


async def test_pending_debits_count_against_debits_must_not_exceed_credits(ledger):
    # two-phase-transfers.md "Pessimistic Pending Transfers": credits_posted = 100, debits_posted = 70,
    # a pending transfer of 50 "will fail. It will not wait to get to posted status to fail."
    L, bank, a, b = await setup(ledger, a_flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    await fund(ledger, ledger=L, source=a, target=b, amount=70)
    pending_50 = transfer(ledger=L, dr=a, cr=b, amount=50, flags=TF.PENDING)
    assert await transfer_statuses(ledger, [pending_50]) == [TS.EXCEEDS_CREDITS]
    # A reserved amount also blocks a later posted transfer, until it is voided.
    p = await make_pending(ledger, L, a, b, 30)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_CREDITS]
    await create_transfers_ok(ledger, [void(p)])
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=30)]) == [TS.CREATED]
    assert await balances(ledger, a) == (0, 100, 0, 100)


async def test_pending_credits_are_not_spendable(ledger):
    # account.md: debits_must_not_exceed_credits compares against `credits_posted` only.
    L, bank, a, b = await setup(ledger, a_flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    await make_pending(ledger, L, bank, a, 100)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_CREDITS]


async def wait_for_balances(led, account_id, expected, timeout_s=15.0):
    # transfer.md `timeout`: "It is not guaranteed that the pending balance will be removed exactly at
    # its expiry. In particular, client requests may observe still-pending balances for expired transfers."
    deadline = time.monotonic() + timeout_s
    while True:
        got = await balances(led, account_id)
        if got == expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_expired_pending_releases_funds_and_cannot_be_posted_or_voided(ledger):
    L, bank, a, b = await setup(ledger, a_flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY)
    funding = await fund(ledger, ledger=L, source=bank, target=a, amount=100)
    p = await make_pending(ledger, L, a, b, 100, timeout=1)
    assert await transfer_statuses(ledger, [transfer(ledger=L, dr=a, cr=b, amount=1)]) == [TS.EXCEEDS_CREDITS]

    await asyncio.sleep(2.5)
    assert await wait_for_balances(ledger, a, (0, 0, 0, 100)) == (0, 0, 0, 100)
    assert await balances(ledger, b) == (0, 0, 0, 0)
    # two-phase-transfers.md "Errors": resolving an expired transfer returns pending_transfer_expired.
    assert await transfer_statuses(ledger, [post(p)]) == [TS.PENDING_TRANSFER_EXPIRED]
    assert await transfer_statuses(ledger, [void(p)]) == [TS.PENDING_TRANSFER_EXPIRED]
    # Transfers are immutable: the pending transfer is still there, unchanged.
    stored = await get_transfer(ledger, p.id)
    assert (stored.amount, stored.flags, stored.timeout) == (100, TF.PENDING, 1)
    # The reserved funds are available again.
    spend = transfer(ledger=L, dr=a, cr=b, amount=100)
    assert await transfer_statuses(ledger, [spend]) == [TS.CREATED]
    # Expiry creates no transfer and no historical balance (get_account_balances.md: "Pending balances
    # automatically removed due to timeout expiration don't change historical balances").
    history = await ledger.get_account_balances(account_filter(a))
    assert [(h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted) for h in history] == [
        (0, 0, 0, 100),
        (100, 0, 0, 100),
        (0, 100, 0, 100),
    ]
    assert [t.id for t in await ledger.get_account_transfers(account_filter(a))] == [
        funding.id,
        p.id,
        spend.id,
    ]


@pytest.mark.slow
async def test_an_id_reused_after_its_chain_failed_keeps_only_its_own_timeout(ledger):
    # linked-events.md: a chain that fails is rolled back whole, so its pending transfers (and their
    # timeouts) never existed; failing with `linked_event_failed` does not burn an id (only transient
    # failures do), so the ids can be used again, with timeouts of their own.
    L, _, a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING | TF.LINKED, timeout=1),
        transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING | TF.LINKED, timeout=1),
        transfer(ledger=L, dr=a, cr=b, amount=10, code=0),
    ]
    assert await transfer_statuses(ledger, chain) == [
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
        TS.CODE_MUST_NOT_BE_ZERO,
    ]
    longer = transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING, timeout=3600, id=chain[0].id)
    without = transfer(ledger=L, dr=a, cr=b, amount=10, flags=TF.PENDING, id=chain[1].id)
    await create_transfers_ok(ledger, [longer, without])

    await asyncio.sleep(2.5)  # well past the rolled-back transfers' timeouts
    assert await balances(ledger, a) == (20, 0, 0, 0)
    assert await transfer_statuses(ledger, [post(longer), post(without)]) == [TS.CREATED, TS.CREATED]
    assert await balances(ledger, a) == (0, 20, 0, 0)
