"""The parties of every operation type, as one table (pm/domain/parties.py): who the acting user is for
each, what the body may and must name, the refusals with their codes, and that a stored intent is held to
the same shape (validation's check)."""

from __future__ import annotations

import uuid

import pytest

from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.parties import (
    SHAPES,
    Parties,
    PartyRefusal,
    parties_for,
    party_refusal,
    party_refusal_of,
    refund_parties,
)

OP = OperationType
USER, OTHER, MERCHANT = 1001, 1002, 77


@pytest.mark.parametrize(
    ("operation", "asked", "expected"),
    [
        (OP.P2P_TRANSFER, {"recipient_id": OTHER}, Parties(sender_id=USER, recipient_id=OTHER)),
        (OP.IPPS_WITHDRAWAL, {"destination_ref": "tok_a"}, Parties(sender_id=USER)),
        (OP.THAI_QR_PAY, {"destination_ref": "tok_a"}, Parties(sender_id=USER)),
        (OP.QP_TOPUP, {}, Parties(recipient_id=USER)),
        (OP.MINIAPP_CHARGE, {"merchant_id": MERCHANT}, Parties(sender_id=USER, merchant_id=MERCHANT)),
        (OP.MINIAPP_CREDIT, {"merchant_id": MERCHANT}, Parties(recipient_id=USER, merchant_id=MERCHANT)),
        (OP.ADMIN_ADJUSTMENT, {"recipient_id": OTHER}, Parties(recipient_id=OTHER, operator_id=USER)),
    ],
)
def test_each_operation_type_has_its_parties(operation: OperationType, asked: dict, expected: Parties) -> None:
    assert parties_for(operation, acting_user_id=USER, **asked) == expected


@pytest.mark.parametrize(
    ("operation", "asked", "code"),
    [
        (OP.P2P_TRANSFER, {}, ErrorCode.INVALID_PARTY),  # no recipient
        (OP.P2P_TRANSFER, {"recipient_id": USER}, ErrorCode.SAME_PARTY),
        (OP.P2P_TRANSFER, {"recipient_id": OTHER, "destination_ref": "tok_a"}, ErrorCode.INVALID_PARTY),
        (OP.IPPS_WITHDRAWAL, {}, ErrorCode.INVALID_PARTY),  # no destination_ref
        (OP.IPPS_WITHDRAWAL, {"destination_ref": "tok_a", "recipient_id": OTHER}, ErrorCode.INVALID_PARTY),
        (OP.QP_TOPUP, {"recipient_id": OTHER}, ErrorCode.INVALID_PARTY),  # the acting user is the party
        (OP.MINIAPP_CHARGE, {}, ErrorCode.INVALID_PARTY),  # no merchant from the key
        (OP.ADMIN_ADJUSTMENT, {}, ErrorCode.INVALID_PARTY),
    ],
)
def test_parties_that_do_not_fit_are_refused_with_their_code(operation: OperationType, asked: dict, code) -> None:
    with pytest.raises(PartyRefusal) as refused:
        parties_for(operation, acting_user_id=USER, **asked)
    assert refused.value.code == code


@pytest.mark.parametrize("operation", [op for op, shape in SHAPES.items() if not (shape.operator or shape.refund)])
def test_a_users_operation_needs_the_acting_user(operation: OperationType) -> None:
    asked = {"recipient_id": OTHER} if operation == OP.P2P_TRANSFER else {}
    asked |= {"destination_ref": "tok_a"} if SHAPES[operation].destination_ref else {}
    asked |= {"merchant_id": MERCHANT} if SHAPES[operation].merchant else {}
    with pytest.raises(PartyRefusal) as refused:
        parties_for(operation, acting_user_id=None, **asked)
    assert refused.value.code == ErrorCode.BAD_REQUEST


def _intent(operation: OperationType, **fields) -> Intent:
    base = {"sender_id": None, "recipient_id": None}
    return Intent(uuid.uuid4(), State.CREATED, 1, operation, 100, "THB", **(base | fields))


@pytest.mark.parametrize(
    ("intent", "code"),
    [
        (_intent(OP.P2P_TRANSFER, sender_id=USER, recipient_id=OTHER), None),
        (_intent(OP.P2P_TRANSFER, sender_id=USER, recipient_id=USER), ErrorCode.SAME_PARTY),
        (_intent(OP.P2P_TRANSFER, sender_id=-1, recipient_id=OTHER), ErrorCode.INVALID_PARTY),
        (_intent(OP.QP_TOPUP, recipient_id=USER), None),
        (_intent(OP.QP_TOPUP, recipient_id=USER, sender_id=OTHER), ErrorCode.INVALID_PARTY),
        (_intent(OP.IPPS_WITHDRAWAL, sender_id=USER), ErrorCode.INVALID_PARTY),  # no destination_ref
        (_intent(OP.IPPS_WITHDRAWAL, sender_id=USER, destination_ref="tok_a"), None),
        (_intent(OP.MINIAPP_CREDIT, recipient_id=USER, merchant_id=MERCHANT), None),
        (_intent(OP.MINIAPP_CREDIT, recipient_id=USER, merchant_id=0), ErrorCode.INVALID_PARTY),
        (_intent(OP.ADMIN_ADJUSTMENT, recipient_id=OTHER, operator_id=USER), None),
    ],
)
def test_a_stored_intent_is_held_to_the_same_table(intent: Intent, code: ErrorCode | None) -> None:
    refusal = party_refusal(intent)
    assert (refusal[0] if refusal else None) == code


def _settled(operation: OperationType, **parties: int) -> Intent:
    return Intent(id=uuid.uuid4(), state=State.SETTLED, version=6, operation_type=operation, amount_minor=500,
                  currency="THB", sender_id=parties.get("sender_id"), recipient_id=parties.get("recipient_id"),
                  merchant_id=parties.get("merchant_id"))  # fmt: skip


def test_a_refund_swaps_the_originals_sides() -> None:
    transfer = _settled(OP.P2P_TRANSFER, sender_id=USER, recipient_id=OTHER)
    assert refund_parties(transfer) == Parties(sender_id=OTHER, recipient_id=USER)
    charge = _settled(OP.MINIAPP_CHARGE, sender_id=USER, merchant_id=MERCHANT)
    assert refund_parties(charge) == Parties(recipient_id=USER, merchant_id=MERCHANT)
    for original in (transfer, charge):
        assert party_refusal_of(OP.REFUND, refund_parties(original), None) is None
    with pytest.raises(PartyRefusal) as refused:  # parties come from the original, never from the body
        parties_for(OP.REFUND, acting_user_id=USER, recipient_id=OTHER)
    assert refused.value.code == ErrorCode.INVALID_PARTY


@pytest.mark.parametrize(
    ("parties", "code"),
    [
        (Parties(sender_id=OTHER), ErrorCode.INVALID_PARTY),  # pays nobody back
        (Parties(recipient_id=USER), ErrorCode.INVALID_PARTY),  # paid by no one
        (Parties(sender_id=OTHER, recipient_id=USER, merchant_id=MERCHANT), ErrorCode.INVALID_PARTY),  # by both
        (Parties(sender_id=USER, recipient_id=USER), ErrorCode.SAME_PARTY),
        (Parties(sender_id=OTHER, recipient_id=USER, operator_id=USER), ErrorCode.INVALID_PARTY),
        (Parties(recipient_id=USER, merchant_id=-1), ErrorCode.INVALID_PARTY),
    ],
)
def test_a_stored_refund_that_does_not_fit_is_refused(parties: Parties, code: ErrorCode) -> None:
    refusal = party_refusal_of(OP.REFUND, parties, None)
    assert refusal is not None and refusal[0] == code
