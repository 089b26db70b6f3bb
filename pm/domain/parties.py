"""Who an intent moves money between, per operation type: the one table every path checks (the gateway
when it creates an intent or a quote, validation when it routes one). No I/O.

    parties = parties_for(OperationType.P2P_TRANSFER, acting_user_id=1001, recipient_id=1002)   # or PartyRefusal
    refusal = party_refusal(intent)       # (ErrorCode, message) when a stored intent does not fit its shape

The acting user is the signed X-User-Id; a merchant only ever comes from the caller's API key, never from
the body; the operator of an adjustment is recorded, and is not a party (the adjustments account pays).
A REFUND's parties come from its original alone (`refund_parties`: the sides swapped; the gateway checks
who may ask, gateway/refunds.py): a user or a merchant pays, a user is paid back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pm.domain.intent import REFUNDABLE_OPERATIONS, ErrorCode, Intent, OperationType


class Role(StrEnum):
    ACTING_USER = "the acting user (X-User-Id)"
    BODY = "recipient_id in the body"
    ORIGINAL = "the original intent's (refund_of): its sides swapped"


@dataclass(frozen=True, slots=True)
class Shape:
    """Where each party of an operation type comes from (None: it has no such party)."""

    sender: Role | None = None
    recipient: Role | None = None
    merchant: bool = False  # the caller's key's merchant is a party
    destination_ref: bool = False  # an external payee, by the Auth Center's token
    operator: bool = False  # the acting user is recorded as the operator, not as a party
    refund: bool = False  # the parties are the original's, swapped (refund_parties); a merchant pays, or a user


SHAPES: dict[OperationType, Shape] = {
    OperationType.P2P_TRANSFER: Shape(sender=Role.ACTING_USER, recipient=Role.BODY),
    OperationType.IPPS_WITHDRAWAL: Shape(sender=Role.ACTING_USER, destination_ref=True),
    OperationType.THAI_QR_PAY: Shape(sender=Role.ACTING_USER, destination_ref=True),
    OperationType.QP_TOPUP: Shape(recipient=Role.ACTING_USER),
    OperationType.MINIAPP_CHARGE: Shape(sender=Role.ACTING_USER, merchant=True),
    OperationType.MINIAPP_CREDIT: Shape(recipient=Role.ACTING_USER, merchant=True),
    OperationType.ADMIN_ADJUSTMENT: Shape(recipient=Role.BODY, operator=True),
    OperationType.REFUND: Shape(sender=Role.ORIGINAL, recipient=Role.ORIGINAL, refund=True),
}
assert set(SHAPES) == set(OperationType), "every operation type has its parties"


@dataclass(frozen=True, slots=True)
class Parties:
    sender_id: int | None = None
    recipient_id: int | None = None
    operator_id: int | None = None
    merchant_id: int | None = None


class PartyRefusal(ValueError):
    """The parties asked for do not fit the operation type. `code` is INVALID_PARTY or SAME_PARTY, or
    BAD_REQUEST when the acting user is missing (a request the caller must sign with X-User-Id)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parties_for(
    operation: OperationType,
    *,
    acting_user_id: int | None,
    recipient_id: int | None = None,
    destination_ref: str | None = None,
    merchant_id: int | None = None,
) -> Parties:
    """The parties of an intent asked for, or PartyRefusal. Who may ask (scopes, operation lists, the
    merchant of a key) is the caller's check, made before this. Messages never repeat the request's
    values (a refused body may carry what must not be echoed)."""
    shape = SHAPES[operation]
    if shape.refund:
        raise PartyRefusal(ErrorCode.INVALID_PARTY, "a REFUND names the intent it refunds (refund_of)")
    if destination_ref is not None and not shape.destination_ref:
        raise PartyRefusal(ErrorCode.INVALID_PARTY, "only IPPS_WITHDRAWAL and THAI_QR_PAY take destination_ref")
    if shape.destination_ref and destination_ref is None:
        raise PartyRefusal(ErrorCode.INVALID_PARTY, "a payout needs destination_ref")
    if Role.BODY in (shape.sender, shape.recipient):
        if recipient_id is None:
            raise PartyRefusal(ErrorCode.INVALID_PARTY, "this operation_type needs recipient_id")
    elif recipient_id is not None:
        message = "this operation_type takes no recipient_id: the acting user (X-User-Id) is the party"
        raise PartyRefusal(ErrorCode.INVALID_PARTY, message)
    if shape.merchant and merchant_id is None:
        raise PartyRefusal(ErrorCode.INVALID_PARTY, "mini-app operations need the merchant of a merchant-bound key")
    if Role.ACTING_USER in (shape.sender, shape.recipient) and acting_user_id is None:
        message = "X-User-Id (the user whose money moves) is required for this operation_type"
        raise PartyRefusal(ErrorCode.BAD_REQUEST, message)
    by_role = {Role.ACTING_USER: acting_user_id, Role.BODY: recipient_id, None: None}
    parties = Parties(
        sender_id=by_role[shape.sender],
        recipient_id=by_role[shape.recipient],
        operator_id=acting_user_id if shape.operator else None,
        merchant_id=merchant_id if shape.merchant else None,
    )
    if parties.sender_id is not None and parties.sender_id == parties.recipient_id:
        raise PartyRefusal(ErrorCode.SAME_PARTY, "sender and recipient must differ")
    assert party_refusal_of(operation, parties, destination_ref) is None, (operation, parties)
    return parties


def refund_parties(original: Intent) -> Parties:
    """The parties of a refund of `original` (a P2P_TRANSFER or MINIAPP_CHARGE; the caller checked):
    money goes back the way it came, so who was paid pays and who paid is paid."""
    assert original.operation_type in REFUNDABLE_OPERATIONS, original.operation_type
    if original.operation_type == OperationType.MINIAPP_CHARGE:
        return Parties(recipient_id=original.sender_id, merchant_id=original.merchant_id)
    return Parties(sender_id=original.recipient_id, recipient_id=original.sender_id)


def party_refusal(intent: Intent) -> tuple[ErrorCode, str] | None:
    """Why a stored intent's parties do not fit its operation type (validation's check), or None."""
    parties = Parties(intent.sender_id, intent.recipient_id, intent.operator_id, intent.merchant_id)
    return party_refusal_of(intent.operation_type, parties, intent.destination_ref)


def party_refusal_of(
    operation: OperationType, parties: Parties, destination_ref: str | None
) -> tuple[ErrorCode, str] | None:
    shape = SHAPES[operation]
    if shape.refund:
        return _refund_party_refusal(parties, destination_ref)
    users = {"sender": (shape.sender, parties.sender_id), "recipient": (shape.recipient, parties.recipient_id)}
    for name, (role, user_id) in users.items():
        if (role is None) != (user_id is None):
            wanted = f"a {name}" if role is not None else f"no {name}"
            return ErrorCode.INVALID_PARTY, f"{operation} has {wanted} in the wallet"
        if user_id is not None and user_id <= 0:
            return ErrorCode.INVALID_PARTY, "users are positive integers"
    if parties.sender_id is not None and parties.sender_id == parties.recipient_id:
        return ErrorCode.SAME_PARTY, "sender and recipient must differ"
    merchant_id = parties.merchant_id
    if shape.merchant != (merchant_id is not None) or (merchant_id is not None and merchant_id <= 0):
        return ErrorCode.INVALID_PARTY, f"{operation} {'needs' if shape.merchant else 'has no'} a merchant"
    if shape.destination_ref != bool(destination_ref):
        wanted = "needs" if shape.destination_ref else "takes no"
        return ErrorCode.INVALID_PARTY, f"{operation} {wanted} destination_ref"
    return None


def _refund_party_refusal(parties: Parties, destination_ref: str | None) -> tuple[ErrorCode, str] | None:
    """A refund pays a user back, from a user (of a P2P_TRANSFER) or from a merchant (of a charge)."""
    if parties.recipient_id is None or parties.recipient_id <= 0:
        return ErrorCode.INVALID_PARTY, "a REFUND pays back a user in the wallet"
    if (parties.sender_id is None) == (parties.merchant_id is None):
        return ErrorCode.INVALID_PARTY, "a REFUND is paid by a user or by a merchant, one of them"
    if any(party is not None and party <= 0 for party in (parties.sender_id, parties.merchant_id)):
        return ErrorCode.INVALID_PARTY, "users and merchants are positive integers"
    if parties.sender_id == parties.recipient_id:
        return ErrorCode.SAME_PARTY, "sender and recipient must differ"
    if parties.operator_id is not None or destination_ref:
        return ErrorCode.INVALID_PARTY, "a REFUND has no operator and no destination_ref"
    return None
