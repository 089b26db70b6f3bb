"""Admin API for fee rules (admin scope; `X-User-Id`, optional, is recorded as the operator).

    POST   /admin/fee-rules         a rule -> 201, version 1
    GET    /admin/fee-rules         every rule's current version
    GET    /admin/fee-rules/{id}    the current version and the versions before it
    PUT    /admin/fee-rules/{id}    the whole rule again -> a new version
    DELETE /admin/fee-rules/{id}    disable -> a new version (history kept)

`currency` is required: the rule prices intents of that currency only, and `min_fee_minor` / `max_fee_minor`
are in its minor units (a ledger currency, else 422 UNSUPPORTED_CURRENCY; missing or malformed: 422
VALIDATION_FAILED, as for limit rules). `min_fee_minor` null (or omitted) is 0, answered as 0;
`max_fee_minor` null (or omitted) is no maximum, answered as null. A body is parsed strictly (422
VALIDATION_FAILED; a name, string literal or comment that looks like
personal data: 422 PII_REFUSED), then both CEL expressions are
compiled by both engines against the declared variables: a parse or type error, a wrong result type or
an expression beyond the bounds is 400 RULE_INVALID with the compiler's message. Each change is one
transaction with its version row, its audit row and the rule generation (pm/store/fee_rules.py), so every
process reloads within a second (this one at once: its own quotes then price with the change).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

import channels
from gateway.admin_requests import actor_of, conflict, parse_body, path_id
from gateway.errors import ApiError, json_response, not_found, validation_failed
from gateway.models import BIGINT_MAX, INT4_MAX, Currency, NoPii, pii_refusal
from gateway.quote import RULES
from gateway.resources import DATABASE, SETTINGS
from pm.domain.cel import EXPRESSION_LENGTH_HARD_MAX, Bounds, CelCompileError, ProductionEngine, ReferenceEngine
from pm.domain.cel.base import text_parts
from pm.domain.intent import ErrorCode, OperationType
from pm.domain.pii import pii_kind
from pm.domain.pricing import UNPRICED_OPERATIONS, FeeKind, FeeRuleFields, check_expressions
from pm.store import fee_rules
from pm.store.fee_rules import StoredFeeRule


def _refuse_pii_in_text(expression: object) -> object:
    """A rule's free text (its string literals, where tags appear, and its comments) is stored, versioned
    and audited: it must not carry personal data either (pm/domain/pii.py)."""
    if isinstance(expression, str):
        for part in text_parts(expression):
            kind = pii_kind(part)
            if kind is not None:
                raise pii_refusal(kind)
    return expression


# Upper-case machine names, as the schema's CHECK has them.
Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,62}$")]
Expression = Annotated[
    str, StringConstraints(min_length=1, max_length=EXPRESSION_LENGTH_HARD_MAX), BeforeValidator(_refuse_pii_in_text)
]
Minor = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
# Compiling checks only: one engine of each kind per process is enough.
_ENGINES = (ProductionEngine(), ReferenceEngine())
Saved = TypeVar("Saved", StoredFeeRule, StoredFeeRule | None)


class FeeRuleBody(BaseModel):
    """The body of POST and PUT /admin/fee-rules: a whole rule."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=200), NoPii]
    # Required, as a limit rule's: the rule prices intents of this currency only, and its fee bounds are in
    # its minor units, so a PUT can never move a rule into another currency by leaving it out.
    currency: Currency = Field(description="the currency of the intents it prices; its fee bounds' minor units")
    operation_type: Code | None = None
    channel: Code | None = None
    condition: Expression
    amount: Expression
    kind: Literal["PRE", "POST"]
    priority: Annotated[int, Field(ge=0, le=INT4_MAX)]
    # null, as first specified, means 0 (no minimum); stored and answered as 0.
    min_fee_minor: Minor | None = Field(default=0, description="the smallest fee; null or omitted: 0")
    # null (or omitted) means no maximum; stored and answered as null.
    max_fee_minor: Minor | None = Field(default=None, description="the largest fee; null or omitted: no maximum")
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    enabled: bool = True

    def fields(self) -> FeeRuleFields:
        """The rule's fields, by name (the body mirrors FeeRuleFields), with a null minimum made 0."""
        minimum = 0 if self.min_fee_minor is None else self.min_fee_minor
        return FeeRuleFields(**{**self.model_dump(), "kind": FeeKind(self.kind), "min_fee_minor": minimum})


async def create_fee_rule(request: web.Request) -> web.Response:
    fields = await _fields(request)
    saved = await _saving(fee_rules.create_rule(request.app[DATABASE], actor_of(request), fields))
    request.app[RULES].expire()
    return json_response(saved.to_json(), 201)


async def list_fee_rules(request: web.Request) -> web.Response:
    listed = await fee_rules.list_rules(request.app[DATABASE])
    return json_response({"items": [stored.to_json() for stored in listed]})


async def get_fee_rule(request: web.Request) -> web.Response:
    rule_id = path_id(request)
    pool = request.app[DATABASE]
    stored = await fee_rules.get_rule(pool, rule_id)
    if stored is None:
        raise not_found()
    return json_response({**stored.to_json(), "versions": await fee_rules.rule_versions(pool, rule_id)})


async def update_fee_rule(request: web.Request) -> web.Response:
    rule_id = path_id(request)
    fields = await _fields(request)
    saved = await _saving(fee_rules.update_rule(request.app[DATABASE], actor_of(request), rule_id, fields))
    if saved is None:
        raise not_found()
    request.app[RULES].expire()
    return json_response(saved.to_json())


async def delete_fee_rule(request: web.Request) -> web.Response:
    saved = await fee_rules.disable_rule(request.app[DATABASE], actor_of(request), path_id(request))
    if saved is None:
        raise not_found()
    request.app[RULES].expire()
    return json_response(saved.to_json())


async def _fields(request: web.Request) -> FeeRuleFields:
    body = await parse_body(request, FeeRuleBody)
    _check_consistent(body)
    bounds = Bounds(length_max=request.app[SETTINGS].fee_rule_expression_length_max)
    try:
        check_expressions(body.condition, body.amount, _ENGINES, bounds)
    except CelCompileError as exc:
        raise ApiError(400, ErrorCode.RULE_INVALID, str(exc)) from None
    return body.fields()


def _check_consistent(body: FeeRuleBody) -> None:
    """What the schema alone does not say: names that exist, and ranges the right way round."""
    if body.operation_type is not None:
        if body.operation_type not in OperationType.__members__:
            raise validation_failed(f"unknown operation_type; known: {', '.join(OperationType.__members__)}")
        if body.operation_type in UNPRICED_OPERATIONS:
            raise validation_failed(f"{body.operation_type} is never priced; no fee rule applies to it")
    if body.channel is not None:
        channel = channels.channel_named(body.channel)
        priced = channel is not None and any(op not in UNPRICED_OPERATIONS for op in channel.operation_types)
        if not priced:
            raise validation_failed("unknown channel, or one that is never priced")
        assert channel is not None
        if body.operation_type is not None and body.operation_type not in channel.operation_types:
            raise validation_failed(f"channel {body.channel} does not carry {body.operation_type}")
    if body.max_fee_minor is not None and body.max_fee_minor < (body.min_fee_minor or 0):
        raise validation_failed("max_fee_minor must not be below min_fee_minor")
    if body.valid_from is not None and body.valid_to is not None and body.valid_to <= body.valid_from:
        raise validation_failed("valid_to must be after valid_from")


async def _saving(change: Awaitable[Saved]) -> Saved:
    try:
        return await change
    except fee_rules.TooManyRulesError as exc:  # as for limit rules and routes (gateway/admin_crud.py)
        raise conflict(str(exc)) from None


__all__ = ["FeeRuleBody", "create_fee_rule", "delete_fee_rule", "get_fee_rule", "list_fee_rules", "update_fee_rule"]
