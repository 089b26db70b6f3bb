"""Proves linked chains are all-or-nothing, report `linked_event_failed`/`linked_event_chain_open`, and
leave other events alone.

Sources: docs/coding/linked-events.md @ dd72189a ("Events within a chain are executed in order, or are
rolled back on error, so that the effect of each event in the chain is visible to the next. Each chain
is either visible or invisible as a unit to subsequent transfers after the chain. The event that was
the first to fail within a chain will have a unique error result. Other events in the chain will have
their error result set to linked_event_failed."), create_transfers.md @ c1c325e5 and
create_accounts.md @ 82d424a7 (`linked_event_chain_open`: "flags.linked was set on the last event in
the batch"), and the "Linked Events" example of the 0.17.9 Python client README, where re-creating an
id inside a chain "Fail[s] with exists" and rolls the chain back.
"""

from __future__ import annotations

import dataclasses

import tigerbeetle as tb

from tests.support.ledger import (
    AF,
    AS,
    TF,
    TS,
    account,
    account_statuses,
    balances,
    create_accounts_ok,
    fund,
    new_accounts,
    transfer,
    transfer_statuses,
    unique_ledger,
)

LINKED = TF.LINKED


async def setup(led):
    L = unique_ledger()
    bank, a, b = await new_accounts(led, L, [AF.NONE, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.NONE])
    return L, bank, a, b


async def test_chain_is_all_or_nothing(ledger):
    L, bank, a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=bank, cr=a, amount=10, flags=LINKED),
        transfer(ledger=L, dr=a, cr=b, amount=10, flags=LINKED),
        transfer(ledger=L, dr=a, cr=b, amount=1),  # exceeds a's credits: breaks the chain
    ]
    assert await transfer_statuses(ledger, chain) == [
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
        TS.EXCEEDS_CREDITS,
    ]
    assert await ledger.lookup_transfers([t.id for t in chain]) == []
    for acct in (bank, a, b):
        assert await balances(ledger, acct) == (0, 0, 0, 0)


async def test_effects_inside_a_chain_are_visible_to_later_events_in_it(ledger):
    L, bank, a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=bank, cr=a, amount=10, flags=LINKED),
        transfer(ledger=L, dr=a, cr=b, amount=10),  # only possible because of the first transfer
    ]
    assert await transfer_statuses(ledger, chain) == [TS.CREATED, TS.CREATED]
    assert await balances(ledger, a) == (0, 10, 0, 10)


async def test_failed_chain_does_not_affect_events_outside_it(ledger):
    L, bank, a, b = await setup(ledger)
    before = transfer(ledger=L, dr=bank, cr=b, amount=5)
    chain = [
        transfer(ledger=L, dr=bank, cr=a, amount=10, flags=LINKED),
        transfer(ledger=L, dr=a, cr=b, amount=11),  # fails
    ]
    after_ok = transfer(ledger=L, dr=bank, cr=b, amount=7)
    after_sees_no_chain = transfer(ledger=L, dr=a, cr=b, amount=10)  # the rolled-back credit is invisible
    statuses = await transfer_statuses(ledger, [before, *chain, after_ok, after_sees_no_chain])
    assert statuses == [
        TS.CREATED,
        TS.LINKED_EVENT_FAILED,
        TS.EXCEEDS_CREDITS,
        TS.CREATED,
        TS.EXCEEDS_CREDITS,
    ]
    assert await balances(ledger, b) == (0, 0, 0, 12)
    assert await balances(ledger, a) == (0, 0, 0, 0)


async def test_two_independent_chains_in_one_batch(ledger):
    L, bank, a, b = await setup(ledger)
    good = [
        transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED),
        transfer(ledger=L, dr=bank, cr=b, amount=2),
    ]
    bad = [
        transfer(ledger=L, dr=bank, cr=b, amount=3, flags=LINKED),
        transfer(ledger=L, dr=a, cr=b, amount=4),
    ]
    statuses = await transfer_statuses(ledger, [*bad, *good])
    assert statuses == [TS.LINKED_EVENT_FAILED, TS.EXCEEDS_CREDITS, TS.CREATED, TS.CREATED]
    assert await balances(ledger, b) == (0, 0, 0, 3)


async def test_chain_open_on_the_last_event(ledger):
    L, bank, _a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED),
        transfer(ledger=L, dr=bank, cr=b, amount=2, flags=LINKED),
    ]
    assert await transfer_statuses(ledger, chain) == [TS.LINKED_EVENT_FAILED, TS.LINKED_EVENT_CHAIN_OPEN]
    assert await ledger.lookup_transfers([t.id for t in chain]) == []
    assert await balances(ledger, b) == (0, 0, 0, 0)


async def test_single_event_batch_with_linked_is_chain_open(ledger):
    L, bank, _, b = await setup(ledger)
    solo = transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED)
    assert await transfer_statuses(ledger, [solo]) == [TS.LINKED_EVENT_CHAIN_OPEN]


async def test_chain_open_takes_precedence_over_the_last_events_own_error(ledger):
    L, bank, _, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=bank, cr=b, amount=1),
        transfer(ledger=L, dr=bank, cr=b, amount=1, code=0, flags=LINKED),  # invalid AND open
    ]
    assert await transfer_statuses(ledger, chain) == [TS.CREATED, TS.LINKED_EVENT_CHAIN_OPEN]


async def test_chain_open_on_the_last_event_of_an_already_broken_chain(ledger):
    # create_transfers.md lists linked_event_failed before linked_event_chain_open, but every stored
    # version of src/state_machine.zig `execute_create` checks "index == events.len - 1" for a linked
    # event before "chain_broken", so an open last event reports linked_event_chain_open even after an
    # earlier failure in its chain. This test follows the code (what a cluster returns).
    L, bank, a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=LINKED),  # exceeds_credits
        transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED),
        transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED),  # last, and linked
    ]
    assert await transfer_statuses(ledger, chain) == [
        TS.EXCEEDS_CREDITS,
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_CHAIN_OPEN,
    ]


async def test_events_after_the_first_failure_in_a_chain_report_linked_event_failed(ledger):
    # "The event that was the first to fail within a chain will have a unique error result. Other
    # events in the chain will have their error result set to linked_event_failed" — even if invalid.
    L, bank, a, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=a, cr=b, amount=1, flags=LINKED),  # exceeds_credits
        transfer(ledger=L, dr=bank, cr=b, amount=1, id=0, flags=LINKED),  # would be id_must_not_be_zero
        transfer(ledger=L, dr=bank, cr=b, amount=1, code=0),  # would be code_must_not_be_zero
    ]
    assert await transfer_statuses(ledger, chain) == [
        TS.EXCEEDS_CREDITS,
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
    ]


async def test_readme_example_exists_inside_a_chain_rolls_it_back(ledger):
    L, bank, _, b = await setup(ledger)
    t2, t3, t4 = tb.id(), tb.id(), tb.id()

    def tr(tid, flags=TF.NONE):
        return transfer(ledger=L, dr=bank, cr=b, amount=1, id=tid, flags=flags)

    batch = [
        tr(t2, LINKED),
        tr(t3, LINKED),
        tr(t2, LINKED),
        tr(t4),  # chain: third event fails with exists
        tr(t2),  # individual: does not see the failed chain, so it is created
        tr(t2, LINKED),
        tr(t3),  # chain: the first event fails (t2 exists, stored without `linked`)
        tr(t3, LINKED),
        tr(t4),  # chain: succeeds
    ]
    # The third event re-submits t2 exactly as created earlier in the same chain (flags included), so
    # it is `exists` ("Fail with exists" in the README). The sixth differs from the stored t2 in its
    # flags (`linked`), so by create_transfers.md it is `exists_with_different_flags`.
    assert await transfer_statuses(ledger, batch) == [
        TS.LINKED_EVENT_FAILED,
        TS.LINKED_EVENT_FAILED,
        TS.EXISTS,
        TS.LINKED_EVENT_FAILED,
        TS.CREATED,
        TS.EXISTS_WITH_DIFFERENT_FLAGS,
        TS.LINKED_EVENT_FAILED,
        TS.CREATED,
        TS.CREATED,
    ]
    assert await balances(ledger, b) == (0, 0, 0, 3)


async def test_linked_pending_post_in_one_chain(ledger):
    L, bank, a, _b = await setup(ledger)
    p = transfer(ledger=L, dr=bank, cr=a, amount=50, flags=TF.PENDING | LINKED)
    chain = [p, transfer(ledger=L, pending_id=p.id, amount=20, flags=TF.POST_PENDING_TRANSFER)]
    assert await transfer_statuses(ledger, chain) == [TS.CREATED, TS.CREATED]
    assert await balances(ledger, a) == (0, 0, 0, 20)


async def test_rolled_back_pending_cannot_be_posted_later(ledger):
    L, bank, a, b = await setup(ledger)
    p = transfer(ledger=L, dr=bank, cr=b, amount=50, flags=TF.PENDING | LINKED)
    assert await transfer_statuses(ledger, [p, transfer(ledger=L, dr=a, cr=b, amount=1)]) == [
        TS.LINKED_EVENT_FAILED,
        TS.EXCEEDS_CREDITS,
    ]
    post_it = transfer(ledger=L, pending_id=p.id, amount=50, flags=TF.POST_PENDING_TRANSFER)
    assert await transfer_statuses(ledger, [post_it]) == [TS.PENDING_TRANSFER_NOT_FOUND]


async def test_rolled_back_transfer_ids_are_not_burned(ledger):
    # linked_event_failed is not a transient error (create_transfers.md `id_already_failed` lists the
    # transient ones), so the same ids may be submitted again once the chain can succeed.
    L, bank, a, b = await setup(ledger)
    first = transfer(ledger=L, dr=b, cr=bank, amount=5, flags=LINKED)
    second = transfer(ledger=L, dr=a, cr=b, amount=5, flags=LINKED)
    third = transfer(ledger=L, dr=a, cr=b, amount=5, code=0)  # not transient either
    assert await transfer_statuses(ledger, [first, second, third]) == [
        TS.LINKED_EVENT_FAILED,
        TS.EXCEEDS_CREDITS,
        TS.LINKED_EVENT_FAILED,
    ]
    await fund(ledger, ledger=L, source=bank, target=a, amount=10)
    fixed_third = dataclasses.replace(third, code=7)
    retry = [first, dataclasses.replace(second, id=tb.id()), fixed_third]
    assert await transfer_statuses(ledger, retry) == [TS.CREATED, TS.CREATED, TS.CREATED]


# --- accounts


async def test_account_chain_is_all_or_nothing(ledger):
    L = unique_ledger()
    chain = [
        account(ledger=L, flags=AF.LINKED),
        account(ledger=L, flags=AF.LINKED),
        account(ledger=L, code=0),
    ]
    assert await account_statuses(ledger, chain) == [
        AS.LINKED_EVENT_FAILED,
        AS.LINKED_EVENT_FAILED,
        AS.CODE_MUST_NOT_BE_ZERO,
    ]
    assert await ledger.lookup_accounts([a.id for a in chain]) == []


async def test_account_chain_open(ledger):
    L = unique_ledger()
    chain = [account(ledger=L), account(ledger=L, flags=AF.LINKED), account(ledger=L, flags=AF.LINKED)]
    assert await account_statuses(ledger, chain) == [
        AS.CREATED,
        AS.LINKED_EVENT_FAILED,
        AS.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert [a.id for a in await ledger.lookup_accounts([a.id for a in chain])] == [chain[0].id]


async def test_existing_account_inside_a_chain_fails_the_chain(ledger):
    L = unique_ledger()
    existing = account(ledger=L)
    await create_accounts_ok(ledger, [existing])
    fresh = account(ledger=L)
    chain = [dataclasses.replace(existing, flags=AF.LINKED), fresh]
    # The request's flags (`linked`) differ from the stored account's, and anything but `created`
    # breaks the chain.
    assert await account_statuses(ledger, chain) == [AS.EXISTS_WITH_DIFFERENT_FLAGS, AS.LINKED_EVENT_FAILED]
    assert await ledger.lookup_accounts([fresh.id]) == []


async def test_resubmitted_account_chain_is_exists_then_linked_event_failed(ledger):
    # `exists` is not `created`, so it is the first failure of the chain ("Fail with exists" in the
    # README's linked-events example) and the rest of the chain reports linked_event_failed.
    L = unique_ledger()
    chain = [account(ledger=L, flags=AF.LINKED), account(ledger=L, flags=AF.LINKED), account(ledger=L)]
    first = await ledger.create_accounts(chain)
    again = await ledger.create_accounts([dataclasses.replace(a) for a in chain])
    assert [r.status for r in first] == [AS.CREATED] * 3
    assert [r.status for r in again] == [AS.EXISTS, AS.LINKED_EVENT_FAILED, AS.LINKED_EVENT_FAILED]
    assert again[0].timestamp == first[0].timestamp


async def test_resubmitted_transfer_chain_is_exists_then_linked_event_failed(ledger):
    L, bank, _, b = await setup(ledger)
    chain = [
        transfer(ledger=L, dr=bank, cr=b, amount=1, flags=LINKED),
        transfer(ledger=L, dr=bank, cr=b, amount=2, flags=LINKED),
        transfer(ledger=L, dr=bank, cr=b, amount=3),
    ]
    first = await ledger.create_transfers(chain)
    again = await ledger.create_transfers([dataclasses.replace(t) for t in chain])
    assert [r.status for r in first] == [TS.CREATED] * 3
    assert [r.status for r in again] == [TS.EXISTS, TS.LINKED_EVENT_FAILED, TS.LINKED_EVENT_FAILED]
    assert again[0].timestamp == first[0].timestamp
    assert await balances(ledger, b) == (0, 0, 0, 6)


async def test_independent_accounts_around_a_failed_chain(ledger):
    L = unique_ledger()
    solo1, solo2 = account(ledger=L), account(ledger=L)
    chain = [account(ledger=L, flags=AF.LINKED), account(ledger=0)]
    assert await account_statuses(ledger, [solo1, *chain, solo2]) == [
        AS.CREATED,
        AS.LINKED_EVENT_FAILED,
        AS.LEDGER_MUST_NOT_BE_ZERO,
        AS.CREATED,
    ]
