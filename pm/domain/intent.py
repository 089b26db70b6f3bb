"""The intent: states, allowed transitions, operation types, error codes. No I/O.

    CREATED ─► VALIDATED ─► PRICED ─► CLEARED ─► AUTHORIZED ─► SETTLED
       │           │           │         │ │          │
       └───────────┴───────────┴─────────┴─┼► REJECTED └─► FAILED
                                           └──────────────► FAILED

A MINIAPP_CHARGE that no allowance of its user covers goes CREATED ─► AWAITING_CONFIRMATION (nothing
held, no stage consumes it) ─► VALIDATED once its user confirms, or ─► REJECTED CONFIRMATION_EXPIRED.

CREATED..CLEARED are checks before any money is held (validation, fees, limits); a refusal there is
REJECTED. AUTHORIZED means money is held in the ledger (a pending transfer into transit) and, for a PSP
channel, the PSP was given the payment; from there an intent ends SETTLED (the hold posted and paid out)
or FAILED (the hold voided or expired). A PSP channel's intent is held at dispatch while still CLEARED
(its connector submits it); if that hold is released before the submit, it ends FAILED from CLEARED.
Terminal states never change. Every transition is a compare-and-set on (id, state) in PostgreSQL,
checked against `TRANSITIONS` by `check_transition`, which every path calls.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any


class State(enum.StrEnum):
    CREATED = "CREATED"
    VALIDATED = "VALIDATED"
    PRICED = "PRICED"
    CLEARED = "CLEARED"
    AUTHORIZED = "AUTHORIZED"
    SETTLED = "SETTLED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    # A MINIAPP_CHARGE no allowance covered: waits for its user (POST /intents/{id}/confirm), nothing held.
    AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"


TERMINAL_STATES = frozenset({State.SETTLED, State.REJECTED, State.FAILED})
TERMINAL_STATE_NAMES = frozenset(str(state) for state in TERMINAL_STATES)
# Open states no stage consumes: an intent there waits for someone outside the pipeline (the user's
# confirmation, which publishes it on to the next stage) or for the status poller's expiry.
WAITING_STATES = frozenset({State.AWAITING_CONFIRMATION})

# What the HTTP API shows of an intent, in this order, with `error` after them (Intent.to_json).
API_FIELDS = (
    "id", "state", "version", "operation_type", "amount_minor", "currency", "sender_id", "recipient_id",
    "channel", "fee_pre_minor", "fee_post_minor", "merchant_id", "destination_ref", "created_at", "updated_at",
    "refund_of", "max_fee_pre_minor", "max_fee_post_minor",
)  # fmt: skip

# The one table of allowed transitions (STYLE.md §2).
TRANSITIONS: dict[State, frozenset[State]] = {
    # AWAITING_CONFIRMATION: a mini-app charge waits for its user's consent (no allowance covered it).
    State.CREATED: frozenset({State.VALIDATED, State.REJECTED, State.AWAITING_CONFIRMATION}),
    # Confirmed: on to the fees stage as if validated; not confirmed in time: REJECTED CONFIRMATION_EXPIRED.
    State.AWAITING_CONFIRMATION: frozenset({State.VALIDATED, State.REJECTED}),
    State.VALIDATED: frozenset({State.PRICED, State.REJECTED}),
    State.PRICED: frozenset({State.CLEARED, State.REJECTED}),
    # FAILED from CLEARED: a PSP channel's hold was placed at dispatch, and released before the PSP
    # connector could submit the payment (the hold expired, or the submit deadline passed).
    State.CLEARED: frozenset({State.AUTHORIZED, State.REJECTED, State.FAILED}),
    State.AUTHORIZED: frozenset({State.SETTLED, State.FAILED}),
    State.SETTLED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset(),
}


class TransitionError(AssertionError):
    """A programmer error: code asked for a transition the state machine does not allow."""


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"transition {current} -> {new} is not allowed")


class OperationType(enum.StrEnum):
    P2P_TRANSFER = "P2P_TRANSFER"
    IPPS_WITHDRAWAL = "IPPS_WITHDRAWAL"
    THAI_QR_PAY = "THAI_QR_PAY"
    QP_TOPUP = "QP_TOPUP"
    MINIAPP_CHARGE = "MINIAPP_CHARGE"
    MINIAPP_CREDIT = "MINIAPP_CREDIT"
    ADMIN_ADJUSTMENT = "ADMIN_ADJUSTMENT"
    REFUND = "REFUND"  # gives back (part of) a SETTLED P2P_TRANSFER or MINIAPP_CHARGE: `refund_of`


# What a REFUND may give money back for (channels/refund.py moves it back the way it came).
REFUNDABLE_OPERATIONS = frozenset({OperationType.P2P_TRANSFER, OperationType.MINIAPP_CHARGE})

# By name, for decoding every stream entry and row: a dict lookup is a fraction of an Enum call.
STATE_NAMED: dict[str, State] = {str(state): state for state in State}
OPERATION_NAMED: dict[str, OperationType] = {str(operation): operation for operation in OperationType}


# TigerBeetle `Transfer.code` per operation type (DESIGN.md §4: `code` = the operation type).
OPERATION_CODE: dict[OperationType, int] = {
    OperationType.P2P_TRANSFER: 100,
    OperationType.IPPS_WITHDRAWAL: 200,
    OperationType.THAI_QR_PAY: 210,
    OperationType.QP_TOPUP: 300,
    OperationType.MINIAPP_CHARGE: 400,
    OperationType.MINIAPP_CREDIT: 410,
    OperationType.ADMIN_ADJUSTMENT: 900,
    OperationType.REFUND: 500,
}


class ErrorCode(enum.StrEnum):
    """Stable machine codes: in intent errors and in HTTP error bodies. Never renamed."""

    # Refusals recorded on an intent (REJECTED / FAILED).
    UNKNOWN_OPERATION = "UNKNOWN_OPERATION"
    NO_ROUTE = "NO_ROUTE"
    CHANNEL_UNAVAILABLE = "CHANNEL_UNAVAILABLE"
    AMOUNT_OUT_OF_RANGE = "AMOUNT_OUT_OF_RANGE"
    SAME_PARTY = "SAME_PARTY"
    INVALID_PARTY = "INVALID_PARTY"
    UNSUPPORTED_CURRENCY = "UNSUPPORTED_CURRENCY"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    FEE_RULE_ERROR = "FEE_RULE_ERROR"
    FEE_EXCEEDS_AMOUNT = "FEE_EXCEEDS_AMOUNT"  # a POST fee equal to the amount or larger
    FEE_CHANGED = "FEE_CHANGED"  # a priced fee above the caller's max_fee_pre_minor / max_fee_post_minor
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    EXPIRED = "EXPIRED"
    CONFIRMATION_EXPIRED = "CONFIRMATION_EXPIRED"  # a mini-app charge its user did not confirm in time
    PSP_DECLINED = "PSP_DECLINED"  # the payment service provider refused the payout
    LEDGER_REFUSED = "LEDGER_REFUSED"
    # A refund (POST /intents with refund_of), refused at the gateway with nothing written.
    NOT_REFUNDABLE = "NOT_REFUNDABLE"  # the original is not a SETTLED P2P_TRANSFER or MINIAPP_CHARGE
    REFUND_EXCEEDS_ORIGINAL = "REFUND_EXCEEDS_ORIGINAL"  # with the refunds before, above the original amount
    # HTTP edge.
    BAD_REQUEST = "BAD_REQUEST"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"  # the key may not create this operation type
    NOT_FOUND = "NOT_FOUND"
    IDEMPOTENCY_KEY_REQUIRED = "IDEMPOTENCY_KEY_REQUIRED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    REQUEST_IN_FLIGHT = "REQUEST_IN_FLIGHT"
    CONFLICT = "CONFLICT"  # the change clashes with what is stored (admin API: a route priority taken)
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"  # the key sent more than its rate (pm keys create --rate): retry after Retry-After
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"  # the body did not arrive within PM_REQUEST_BODY_TIMEOUT_MS
    OVERLOADED = "OVERLOADED"  # the pipeline is behind: retry after Retry-After
    UNAVAILABLE = "UNAVAILABLE"  # a dependency (PostgreSQL, Redis, the ledger) does not answer
    RULE_INVALID = "RULE_INVALID"  # a fee rule that does not compile or type-check (admin API)
    PII_REFUSED = "PII_REFUSED"  # a tag, destination_ref or rule text looks like personal data (pm/domain/pii.py)
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class Intent:
    """One movement of money, as stored in `pm.intent` and carried in stream entries."""

    id: uuid.UUID
    state: State
    version: int
    operation_type: OperationType
    amount_minor: int
    currency: str
    sender_id: int | None
    recipient_id: int | None
    channel: str | None = None
    fee_pre_minor: int = 0
    fee_post_minor: int = 0
    tags: tuple[str, ...] = ()
    operator_id: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    fee_rules: tuple[dict[str, Any], ...] = field(default=())
    merchant_id: int | None = None  # MINIAPP_*: the merchant party (from the caller's key)
    destination_ref: str | None = None  # IPPS_*/THAI_QR_PAY: the Auth Center's token for the payee
    refund_of: uuid.UUID | None = None  # REFUND: the intent it gives money back for
    # The fees the caller agreed to (None: no bound): the fees stage rejects FEE_CHANGED above them.
    max_fee_pre_minor: int | None = None
    max_fee_post_minor: int | None = None
    # Carried only by a settlement entry that hands over a PSP's (signature-checked) outcome; never
    # stored on the intent row (pm.psp_event keeps the events).
    psp_status: str | None = None

    def __post_init__(self) -> None:
        assert self.amount_minor > 0, self.amount_minor
        assert self.fee_pre_minor >= 0 and self.fee_post_minor >= 0
        assert self.version >= 1
        assert self.max_fee_pre_minor is None or self.max_fee_pre_minor >= 0
        assert self.max_fee_post_minor is None or self.max_fee_post_minor >= 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def as_created(self) -> Intent:
        """This intent as its creating statement wrote it (CREATED, version 1, no channel, fees or error,
        updated when created): what `POST /intents` first answered, so a replay of that request answers
        the same whatever the intent has become (gateway/intents.py). Only the transitions change a row's
        other columns, and none of them is one the API shows but these."""
        return replace(
            self, state=State.CREATED, version=1, channel=None, fee_pre_minor=0, fee_post_minor=0,
            fee_rules=(), error_code=None, error_message=None, updated_at=self.created_at, psp_status=None,
        )  # fmt: skip

    def parties(self) -> tuple[int, ...]:
        """Users who may read this intent (the operator of an adjustment is not a party)."""
        return tuple(p for p in (self.sender_id, self.recipient_id) if p is not None)

    def to_json(self, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """The intent as the HTTP API shows it (issue 3: intent JSON): the message's public fields
        (`message`: this intent's `to_message()`, when the caller has it already)."""
        if message is None:
            message = self.to_message()
        body = {name: message[name] for name in API_FIELDS}
        body["error"] = {"code": self.error_code, "message": self.error_message} if self.error_code else None
        return body

    def to_message(self) -> dict[str, Any]:
        """The intent as a stream entry carries it (all fields, JSON-safe). Runs once per hop: no asdict."""
        return {
            "id": str(self.id),
            "state": str(self.state),
            "version": self.version,
            "operation_type": str(self.operation_type),
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "sender_id": self.sender_id,
            "recipient_id": self.recipient_id,
            "channel": self.channel,
            "fee_pre_minor": self.fee_pre_minor,
            "fee_post_minor": self.fee_post_minor,
            "tags": list(self.tags),
            "operator_id": self.operator_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "fee_rules": list(self.fee_rules),
            "merchant_id": self.merchant_id,
            "destination_ref": self.destination_ref,
            "psp_status": self.psp_status,
            "refund_of": str(self.refund_of) if self.refund_of is not None else None,
            "max_fee_pre_minor": self.max_fee_pre_minor,
            "max_fee_post_minor": self.max_fee_post_minor,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Intent:
        return cls(
            id=uuid.UUID(data["id"]),
            state=STATE_NAMED[data["state"]],
            version=int(data["version"]),
            operation_type=OPERATION_NAMED[data["operation_type"]],
            amount_minor=int(data["amount_minor"]),
            currency=data["currency"],
            sender_id=data.get("sender_id"),
            recipient_id=data.get("recipient_id"),
            channel=data.get("channel"),
            fee_pre_minor=int(data.get("fee_pre_minor", 0)),
            fee_post_minor=int(data.get("fee_post_minor", 0)),
            tags=tuple(data.get("tags", ())),
            operator_id=data.get("operator_id"),
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
            created_at=_parse_iso(data.get("created_at")),
            updated_at=_parse_iso(data.get("updated_at")),
            fee_rules=tuple(data.get("fee_rules", ())),
            merchant_id=data.get("merchant_id"),
            destination_ref=data.get("destination_ref"),
            psp_status=data.get("psp_status"),
            refund_of=uuid.UUID(data["refund_of"]) if data.get("refund_of") else None,
            max_fee_pre_minor=data.get("max_fee_pre_minor"),
            max_fee_post_minor=data.get("max_fee_post_minor"),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A stage's decision for one intent: move it from `expected` to `new` (compare-and-set)."""

    intent_id: uuid.UUID
    expected: State
    new: State
    channel: str | None = None
    fee_pre_minor: int | None = None
    fee_post_minor: int | None = None
    fee_rules: tuple[dict[str, Any], ...] | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        check_transition(self.expected, self.new)
        refused = self.new in (State.REJECTED, State.FAILED)
        assert refused == (self.error_code is not None), "REJECTED/FAILED carry an error code, others none"


def reject(intent: Intent, code: ErrorCode, message: str) -> Transition:
    return Transition(intent.id, intent.state, State.REJECTED, error_code=code, error_message=message)


def fail(intent: Intent, code: ErrorCode, message: str) -> Transition:
    return Transition(intent.id, intent.state, State.FAILED, error_code=code, error_message=message)


def advance(intent: Intent, new: State, **changes: Any) -> Transition:
    return Transition(intent.id, intent.state, new, **changes)


def with_state(intent: Intent, state: State, version: int) -> Intent:
    return replace(intent, state=state, version=version)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Hold:
    """An intent's pending transfer as the ledger has it (consumers/holds.py reads it).

    TigerBeetle keeps no record of an expiry: a hold has expired once the ledger's clock passes
    `timestamp + timeout`, which PM reads against its own clock (close to the cluster's; every PSP
    deadline keeps a margin before the expiry). Every PSP timing counts from `timestamp_s`."""

    timestamp_s: float  # the ledger's timestamp of the pending transfer
    timeout_s: int
    posted: bool
    voided: bool

    @property
    def expires_at_s(self) -> float:
        return self.timestamp_s + self.timeout_s

    def live(self, now_s: float) -> bool:
        """The money is still held: the only state in which a PSP may be asked to move it."""
        return not (self.posted or self.voided) and now_s < self.expires_at_s
