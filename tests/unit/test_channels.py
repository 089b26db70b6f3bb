"""Channels build the ledger legs of DESIGN.md §4 with derived ids: on a memory ledger, a P2P with PRE and
POST fees moves a+f out of the sender, a-g to the recipient, f+g to fees, and leaves transit at zero;
voiding releases the hold; retrying any step moves nothing twice."""

from __future__ import annotations

import uuid

import tigerbeetle as tb

import channels
from ledger import accounts, open_ledger
from ledger.check import run_check
from pm.domain.intent import Intent, OperationType, State

S = tb.CreateTransferStatus


def p2p(amount: int, fee_pre: int, fee_post: int) -> Intent:
    return Intent(
        id=uuid.uuid4(), state=State.CLEARED, version=4, operation_type=OperationType.P2P_TRANSFER,
        amount_minor=amount, currency="THB", sender_id=1, recipient_id=2, channel="INTERNAL_P2P",
        fee_pre_minor=fee_pre, fee_post_minor=fee_post,
    )  # fmt: skip


async def balances(ledger, names: list[accounts.NamedAccount]) -> list[int]:
    found = {a.id: a for a in await ledger.lookup_accounts([n.id for n in names])}
    return [found[n.id].credits_posted - found[n.id].debits_posted for n in names]


def test_channels_are_discovered_from_their_files() -> None:
    assert set(channels.REGISTRY) >= {"INTERNAL_P2P", "ADJUSTMENT"}
    assert OperationType.P2P_TRANSFER in channels.REGISTRY["INTERNAL_P2P"].operation_types


def test_leg_ids_are_derived_from_the_intent() -> None:
    intent = p2p(1_000, 10, 5)
    channel = channels.REGISTRY["INTERNAL_P2P"]
    assert [t.id for t in channel.settle(intent)] == [t.id for t in channel.settle(intent)]
    assert channel.authorize(intent)[0].id == accounts.transfer_id(intent.id, "hold")
    assert channel.settle(intent)[0].pending_id == accounts.transfer_id(intent.id, "hold")


async def test_p2p_with_fees_moves_exact_amounts_and_transit_returns_to_zero() -> None:
    channel = channels.REGISTRY["INTERNAL_P2P"]
    intent = p2p(amount=10_000, fee_pre=150, fee_post=70)
    sender, recipient = accounts.user(1, "THB"), accounts.user(2, "THB")
    transit, fees, adjustments = accounts.transit("THB"), accounts.fees("THB"), accounts.adjustments("THB")
    async with open_ledger("memory://") as ledger:
        await ledger.create_accounts([a.to_tigerbeetle() for a in (sender, recipient, transit, fees, adjustments)])
        funding = tb.Transfer(
            id=tb.id(),
            debit_account_id=adjustments.id,
            credit_account_id=sender.id,
            amount=20_000,
            ledger=764,
            code=900,
        )
        assert (await ledger.create_transfers([funding]))[0].status == S.CREATED

        hold = channel.authorize(intent)
        assert [r.status for r in await ledger.create_transfers(hold)] == [S.CREATED]
        (held,) = await ledger.lookup_accounts([sender.id])
        assert held.debits_pending == 10_150

        chain = channel.settle(intent)
        assert [r.status for r in await ledger.create_transfers(chain)] == [S.CREATED] * 3
        assert await balances(ledger, [sender, recipient, fees, transit]) == [20_000 - 10_150, 9_930, 220, 0]

        # A retry of the settlement (a redelivered entry) moves nothing.
        again = await ledger.create_transfers(channel.settle(intent))
        assert again[0].status == S.EXISTS
        assert await balances(ledger, [sender, recipient, fees, transit]) == [20_000 - 10_150, 9_930, 220, 0]
        report = await run_check(ledger)
        assert report.ok, report.problems


async def test_void_releases_the_hold() -> None:
    channel = channels.REGISTRY["INTERNAL_P2P"]
    intent = p2p(amount=500, fee_pre=0, fee_post=0)
    sender, transit = accounts.user(1, "THB"), accounts.transit("THB")
    adjustments = accounts.adjustments("THB")
    async with open_ledger("memory://") as ledger:
        await ledger.create_accounts([a.to_tigerbeetle() for a in (sender, transit, adjustments)])
        await ledger.create_transfers(
            [
                tb.Transfer(
                    id=tb.id(),
                    debit_account_id=adjustments.id,
                    credit_account_id=sender.id,
                    amount=500,
                    ledger=764,
                    code=900,
                )
            ]
        )
        await ledger.create_transfers(channel.authorize(intent))
        assert [r.status for r in await ledger.create_transfers(channel.void(intent))] == [S.CREATED]
        (account,) = await ledger.lookup_accounts([sender.id])
        assert (account.debits_pending, account.credits_posted - account.debits_posted) == (0, 500)
        assert (await run_check(ledger)).ok


def test_ledger_requests_are_cut_between_chains() -> None:
    from consumers.chains import _requests

    channel = channels.REGISTRY["INTERNAL_P2P"]
    chains = [(intent, channel.settle(intent)) for intent in (p2p(100, 1, 0) for _ in range(5))]  # 3 legs each
    requests = _requests(chains, events_max=7)
    assert [len(r) for r in requests] == [6, 6, 3]
    assert [t.id for r in requests for t in r] == [t.id for _, chain in chains for t in chain]
    for request in requests:  # every request ends where a chain ends
        assert not request[-1].flags & tb.TransferFlags.LINKED


def external(operation: OperationType, channel: str, fee_pre: int, fee_post: int, **parties) -> Intent:
    return Intent(
        id=uuid.uuid4(), state=State.AUTHORIZED, version=5, operation_type=operation, amount_minor=10_000,
        currency="THB", channel=channel, fee_pre_minor=fee_pre, fee_post_minor=fee_post, **parties,
    )  # fmt: skip


async def test_payouts_and_top_ups_with_fees_move_exact_amounts_and_transit_returns_to_zero() -> None:
    ipps, qp = channels.REGISTRY["IPPS_TRANSFER"], channels.REGISTRY["QP_TRANSFER"]
    payout = external(OperationType.IPPS_WITHDRAWAL, "IPPS_TRANSFER", 150, 100, sender_id=1, recipient_id=None,
                      destination_ref="tok")  # fmt: skip
    top_up = external(OperationType.QP_TOPUP, "QP_TRANSFER", 30, 200, sender_id=None, recipient_id=2)
    user1, user2 = accounts.user(1, "THB"), accounts.user(2, "THB")
    transit, fees, adjustments = accounts.transit("THB"), accounts.fees("THB"), accounts.adjustments("THB")
    psp_ipps, psp_qp = accounts.psp("IPPS_TRANSFER", "THB"), accounts.psp("QP_TRANSFER", "THB")
    everyone = (user1, user2, transit, fees, adjustments, psp_ipps, psp_qp)
    async with open_ledger("memory://") as ledger:
        await ledger.create_accounts([a.to_tigerbeetle() for a in everyone])
        funding = tb.Transfer(
            id=tb.id(), debit_account_id=adjustments.id, credit_account_id=user1.id, amount=20_000, ledger=764, code=900
        )
        assert (await ledger.create_transfers([funding]))[0].status == S.CREATED
        for step in (ipps.authorize(payout), ipps.settle(payout), qp.authorize(top_up)):
            assert {r.status for r in await ledger.create_transfers(step)} == {S.CREATED}
        # The top-up's hold: what QP will owe, pending until PAID.
        (qp_account,) = await ledger.lookup_accounts([psp_qp.id])
        assert (qp_account.debits_pending, qp_account.debits_posted) == (10_030, 0)
        assert {r.status for r in await ledger.create_transfers(qp.settle(top_up))} == {S.CREATED}
        # user1 paid a + PRE; the PSP got a - POST; user2 got a - POST and paid a + PRE at QP.
        assert await balances(ledger, [user1, psp_ipps, user2, psp_qp, fees, transit]) == [
            20_000 - 10_150,
            9_900,
            9_800,
            -10_030,
            (150 + 100) + (30 + 200),
            0,
        ]
        assert (await run_check(ledger)).ok
        # Retried, nothing moves twice.
        for step in (ipps.settle(payout), qp.settle(top_up)):
            assert {r.status for r in await ledger.create_transfers(step)} <= {S.EXISTS, S.LINKED_EVENT_FAILED}


async def test_a_top_up_paid_after_its_hold_was_voided_credits_nothing() -> None:
    """The race a late PAID can lose: settlement voided the top-up (deadline) while another consumer held
    the PAID; its settle chain then fails as a whole, so the user is never credited for a FAILED intent."""
    qp = channels.REGISTRY["QP_TRANSFER"]
    top_up = external(OperationType.QP_TOPUP, "QP_TRANSFER", 30, 200, sender_id=None, recipient_id=2)
    user2, transit, fees = accounts.user(2, "THB"), accounts.transit("THB"), accounts.fees("THB")
    psp_qp = accounts.psp("QP_TRANSFER", "THB")
    async with open_ledger("memory://") as ledger:
        await ledger.create_accounts([a.to_tigerbeetle() for a in (user2, transit, fees, psp_qp)])
        assert {r.status for r in await ledger.create_transfers(qp.authorize(top_up))} == {S.CREATED}
        assert [r.status for r in await ledger.create_transfers(qp.void(top_up))] == [S.CREATED]
        late = [r.status for r in await ledger.create_transfers(qp.settle(top_up))]
        assert late[0] == S.PENDING_TRANSFER_ALREADY_VOIDED
        assert set(late[1:]) == {S.LINKED_EVENT_FAILED}
        assert await balances(ledger, [user2, psp_qp, fees, transit]) == [0, 0, 0, 0]
        assert (await run_check(ledger)).ok
