"""The MINIAPP channel on a memory ledger: a charge moves a+f out of the user, a-g to the merchant and f+g to
fees; a credit moves a+f out of the merchant to the user; a merchant is never overdrawn (`exceeds_credits`
at the hold, nothing held); transit returns to zero; an intent without its merchant or user is refused."""

from __future__ import annotations

import uuid

import pytest
import tigerbeetle as tb

import channels
from ledger import accounts, open_ledger
from ledger.check import run_check
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.parties import party_refusal

S = tb.CreateTransferStatus
CHARGE = OperationType.MINIAPP_CHARGE
CREDIT = OperationType.MINIAPP_CREDIT
USER, MERCHANT = 7, 42


def miniapp(operation: OperationType, amount: int, fee_pre: int = 0, fee_post: int = 0, **changes) -> Intent:
    parties = (
        {"sender_id": USER, "recipient_id": None} if operation == CHARGE else {"sender_id": None, "recipient_id": USER}
    )
    fields = {
        "id": uuid.uuid4(), "state": State.CLEARED, "version": 4, "operation_type": operation, "amount_minor": amount,
        "currency": "THB", "channel": "MINIAPP", "fee_pre_minor": fee_pre, "fee_post_minor": fee_post,
        "merchant_id": MERCHANT, **parties, **changes,
    }  # fmt: skip
    return Intent(**fields)


async def balances(ledger, names: list[accounts.NamedAccount]) -> list[int]:
    found = {a.id: a for a in await ledger.lookup_accounts([n.id for n in names])}
    return [found[n.id].credits_posted - found[n.id].debits_posted if n.id in found else 0 for n in names]


def test_the_channel_carries_both_operation_types() -> None:
    assert channels.REGISTRY["MINIAPP"].operation_types == {CHARGE, CREDIT}


@pytest.mark.parametrize(
    "intent",
    [
        miniapp(CHARGE, 100, merchant_id=None),
        miniapp(CREDIT, 100, merchant_id=None),
        miniapp(CHARGE, 100, sender_id=None),
        miniapp(CREDIT, 100, recipient_id=None),
        miniapp(CHARGE, 100, recipient_id=9),
        miniapp(CREDIT, 100, sender_id=9),
    ],
)
def test_an_intent_without_its_merchant_or_user_is_an_invalid_party(intent: Intent) -> None:
    # The parties of every operation type are checked by one table (pm/domain/parties.py), for this channel too.
    refusal = party_refusal(intent)
    assert refusal is not None and refusal[0] == ErrorCode.INVALID_PARTY


async def test_a_charge_then_a_credit_move_exact_amounts_and_a_merchant_is_never_overdrawn() -> None:
    channel = channels.REGISTRY["MINIAPP"]
    user, merchant = accounts.user(USER, "THB"), accounts.merchant(MERCHANT, "THB")
    transit, fees, adjustments = accounts.transit("THB"), accounts.fees("THB"), accounts.adjustments("THB")
    charge = miniapp(CHARGE, 10_000, fee_pre=150, fee_post=70)
    assert channel.refusal(charge) is None
    async with open_ledger("memory://") as ledger:
        await ledger.create_accounts([a.to_tigerbeetle() for a in {*channel.accounts(charge), adjustments}])
        funding = tb.Transfer(
            id=tb.id(), debit_account_id=adjustments.id, credit_account_id=user.id, amount=20_000, ledger=764, code=900
        )
        assert (await ledger.create_transfers([funding]))[0].status == S.CREATED

        assert [r.status for r in await ledger.create_transfers(channel.authorize(charge))] == [S.CREATED]
        assert [r.status for r in await ledger.create_transfers(channel.settle(charge))] == [S.CREATED] * 3
        assert await balances(ledger, [user, merchant, fees, transit]) == [20_000 - 10_150, 10_000 - 70, 220, 0]

        too_much = miniapp(CREDIT, 9_931)  # the merchant holds 9,930
        hold = channel.authorize(too_much)
        assert hold[0].debit_account_id == merchant.id
        assert [r.status for r in await ledger.create_transfers(hold)] == [S.EXCEEDS_CREDITS]
        assert await ledger.lookup_transfers([accounts.transfer_id(too_much.id, "hold")]) == []

        credit = miniapp(CREDIT, 9_900, fee_pre=30)  # exactly what the merchant holds, with its fee
        assert [r.status for r in await ledger.create_transfers(channel.authorize(credit))] == [S.CREATED]
        settle = channel.settle(credit)
        assert len(settle) == 3 and settle[1].credit_account_id == user.id
        assert [r.status for r in await ledger.create_transfers(settle)] == [S.CREATED] * 3
        assert await balances(ledger, [user, merchant, fees, transit]) == [9_850 + 9_900, 0, 250, 0]
        assert (await run_check(ledger)).ok


def test_no_fee_leg_without_fees() -> None:
    legs = channels.REGISTRY["MINIAPP"].settle(miniapp(CHARGE, 500))
    assert len(legs) == 2 and legs[1].credit_account_id == accounts.merchant(MERCHANT, "THB").id
    assert legs[0].flags & tb.TransferFlags.LINKED and not legs[1].flags & tb.TransferFlags.LINKED
