"""Request bodies, parsed strictly: unknown fields are refused (so no PII slips in), integers are
integers (never floats or strings), and every size is bounded by a setting. A tag or destination_ref
that looks like personal data (pm/domain/pii.py) is refused 422 PII_REFUSED, before any other check of it.

    request = parse_intent_request(body, IntentLimits.from_settings(settings))   # or raises ApiError
    body = parse_model(raw, LimitRuleBody)                                        # any model, as strictly
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from gateway.errors import ApiError, bad_request, validation_failed
from ledger.accounts import CURRENCY_LEDGER
from pm.config.settings import Settings
from pm.domain.intent import ErrorCode, OperationType
from pm.domain.pii import PiiKind, pii_kind

BIGINT_MAX = 2**63 - 1
INT4_MAX = 2**31 - 1  # an `integer` column (priorities, counts)
# Hard caps of the schema itself, above any setting; the settings' bounds are checked after parsing
# so that each refusal can carry its own machine code.
TAGS_COUNT_HARD_MAX = 256
TAG_LENGTH_HARD_MAX = 256
# A tag is a machine word ("kyc_verified", "risk:low"), never free text: no spaces, no names.
TAG_PATTERN = r"^[A-Za-z0-9_.:-]+$"

DESTINATION_REF_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"  # as the schema's CHECK (sql/0006)


PII_ERROR_TYPE = "pii_refused"


def _refuse_pii(value: object) -> object:
    """Run before the field's own checks (a BeforeValidator, last in its Annotated), so `+66812345678` or
    `a@b.co` is refused as PII rather than as a pattern mismatch."""
    if isinstance(value, str):
        kind = pii_kind(value)
        if kind is not None:
            raise pii_refusal(kind)
    return value


def pii_refusal(kind: PiiKind) -> PydanticCustomError:
    """The validation error _refusal turns into 422 PII_REFUSED; it names the kind, never the value."""
    return PydanticCustomError(PII_ERROR_TYPE, "looks like {kind}; PM takes no personal data", {"kind": str(kind)})


NoPii = BeforeValidator(_refuse_pii)

UNSUPPORTED_CURRENCY_ERROR_TYPE = "unsupported_currency"
CURRENCY_PATTERN = r"^[A-Z]{3}$"


def unsupported_currency(message: str) -> PydanticCustomError:
    """The validation error _refusal turns into 422 UNSUPPORTED_CURRENCY."""
    return PydanticCustomError(UNSUPPORTED_CURRENCY_ERROR_TYPE, message)


def _ledger_currency(value: str) -> str:
    if value not in CURRENCY_LEDGER:
        raise unsupported_currency(f"currency must be one of {', '.join(sorted(CURRENCY_LEDGER))}")
    return value


# A currency of the ledger's in an admin body (a limit rule's, a route's): well formed or 422
# VALIDATION_FAILED, then known or 422 UNSUPPORTED_CURRENCY, as POST /intents answers.
Currency = Annotated[
    str,
    StringConstraints(pattern=CURRENCY_PATTERN),
    AfterValidator(_ledger_currency),
    Field(json_schema_extra={"enum": sorted(CURRENCY_LEDGER)}),
]


def _opaque_token(value: str) -> str:
    """The Auth Center's token carries letters; digits and separators alone look like an account or phone
    number in clear, which PM must never receive."""
    if not any(character.isalpha() for character in value):
        raise ValueError("destination_ref must be the Auth Center's opaque token, not an account or phone number")
    return value


Tag = Annotated[str, StringConstraints(min_length=1, max_length=TAG_LENGTH_HARD_MAX, pattern=TAG_PATTERN), NoPii]
UserId = Annotated[int, Field(gt=0, le=BIGINT_MAX)]
# A fee bound in minor units; at most the amount limit too (check_limits, from the settings).
FeeBound = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
Model = TypeVar("Model", bound=BaseModel)

# What POST /intents accepts today; the other operation types wait for their channels (issues 4-5).
SUPPORTED_OPERATIONS = frozenset(
    {
        OperationType.P2P_TRANSFER,
        OperationType.ADMIN_ADJUSTMENT,
        OperationType.MINIAPP_CHARGE,
        OperationType.MINIAPP_CREDIT,
        OperationType.IPPS_WITHDRAWAL,
        OperationType.THAI_QR_PAY,
        OperationType.QP_TOPUP,
        OperationType.REFUND,
    }
)


class IntentMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tags: list[Tag] = Field(default_factory=list, max_length=TAGS_COUNT_HARD_MAX)


class IntentRequest(BaseModel):
    """The body of POST /intents."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    operation_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    amount_minor: Annotated[int, Field(gt=0, le=BIGINT_MAX)]
    currency: Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
    recipient_id: UserId | None = None
    # IPPS_WITHDRAWAL, THAI_QR_PAY: the Auth Center's opaque token for the payee (never a name or number).
    destination_ref: (
        Annotated[str, StringConstraints(pattern=DESTINATION_REF_PATTERN), AfterValidator(_opaque_token), NoPii] | None
    ) = None
    metadata: IntentMetadata = Field(default_factory=IntentMetadata)
    # REFUND only: the SETTLED P2P_TRANSFER or MINIAPP_CHARGE to give (part of) its amount back for.
    refund_of: uuid.UUID | None = Field(
        default=None, description="REFUND only: the SETTLED P2P_TRANSFER or MINIAPP_CHARGE it gives money back for"
    )
    # The fees the user agreed to (POST /quote's answer sent back): a higher priced fee is FEE_CHANGED.
    max_fee_pre_minor: FeeBound | None = Field(
        default=None,
        description="the highest PRE fee the sender agreed to (the quote's fee_pre_minor); a higher fee rejects "
        "the intent FEE_CHANGED before any money is held; null or omitted: no bound",
    )
    max_fee_post_minor: FeeBound | None = Field(
        default=None,
        description="the highest POST fee agreed to (the quote's fee_post_minor); a higher fee rejects the "
        "intent FEE_CHANGED before any money is held; null or omitted: no bound",
    )


@dataclass(frozen=True, slots=True)
class IntentLimits:
    amount_minor_min: int
    amount_minor_max: int
    tags_count_max: int
    tag_length_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> IntentLimits:
        return cls(
            amount_minor_min=settings.intent_amount_minor_min,
            amount_minor_max=settings.intent_amount_minor_max,
            tags_count_max=settings.intent_tags_count_max,
            tag_length_max=settings.intent_tag_length_max,
        )


def parse_intent_request(body: bytes, limits: IntentLimits) -> IntentRequest:
    request = parse_model(body, IntentRequest)
    check_limits(request, limits)
    return request


def parse_model(body: bytes, model: type[Model]) -> Model:
    """The body as `model` (strict), or ApiError: 400 not JSON, 422 not the model, naming the fields."""
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise _refusal(exc) from None


def check_limits(request: IntentRequest, limits: IntentLimits) -> None:
    if request.operation_type not in OperationType.__members__:
        known = ", ".join(OperationType.__members__)
        raise validation_failed(f"unknown operation_type; known: {known}", ErrorCode.UNKNOWN_OPERATION)
    if request.operation_type not in SUPPORTED_OPERATIONS:
        supported = ", ".join(sorted(SUPPORTED_OPERATIONS))
        raise validation_failed(
            f"this operation_type is not available yet; available: {supported}", ErrorCode.CHANNEL_UNAVAILABLE
        )
    if not limits.amount_minor_min <= request.amount_minor <= limits.amount_minor_max:
        raise validation_failed(
            f"amount_minor must be from {limits.amount_minor_min} to {limits.amount_minor_max}",
            ErrorCode.AMOUNT_OUT_OF_RANGE,
        )
    if request.currency not in CURRENCY_LEDGER:
        raise validation_failed(
            f"currency must be one of {', '.join(sorted(CURRENCY_LEDGER))}", ErrorCode.UNSUPPORTED_CURRENCY
        )
    for name, bound in (
        ("max_fee_pre_minor", request.max_fee_pre_minor),
        ("max_fee_post_minor", request.max_fee_post_minor),
    ):
        if bound is not None and bound > limits.amount_minor_max:
            raise validation_failed(f"{name} must be from 0 to {limits.amount_minor_max}")
    tags = request.metadata.tags
    if len(tags) > limits.tags_count_max:
        raise validation_failed(f"metadata.tags holds at most {limits.tags_count_max} tags")
    if any(len(tag) > limits.tag_length_max for tag in tags):
        raise validation_failed(f"a tag is at most {limits.tag_length_max} characters")
    if len(set(tags)) != len(tags):
        raise validation_failed("metadata.tags must not repeat a tag")


def _refusal(exc: pydantic.ValidationError) -> ApiError:
    """Say where and what, never echo the input (it may be the very PII we refuse)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return bad_request("the body is not valid JSON")
    if any(error["type"] == "model_type" and not error["loc"] for error in errors):
        return validation_failed("the body must be a JSON object")
    pii = [error for error in errors if error["type"] == PII_ERROR_TYPE]
    if pii:
        return validation_failed(_described(pii), ErrorCode.PII_REFUSED)
    currencies = [error for error in errors if error["type"] == UNSUPPORTED_CURRENCY_ERROR_TYPE]
    if currencies:
        return validation_failed(_described(currencies), ErrorCode.UNSUPPORTED_CURRENCY)
    return validation_failed(_described(errors))


def _described(errors: list[Any]) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in errors[:5]
    )
