"""The parties of every operation type, as one table (pm/domain/parties.py): who the acting user is for
each, what the body may and must name, the refusals with their codes, and that a stored intent is held to
the same shape (validation's check)."""

from __future__ import annotations

import uuid

import pytest

from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.domain.parties import SHAPES, Parties, PartyRefusal, parties_for, party_refusal

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


@pytest.mark.parametrize("operation", [op for op, shape in SHAPES.items() if not shape.operator])
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
