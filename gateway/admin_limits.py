"""Admin views of limit rules (admin scope; X-User-Id, if sent, is recorded as the operator).

    POST   /admin/limit-rules         {"operation_type", "tag", "period", "max_amount_minor", "max_count",
                                       "enabled"?}                   -> 201 the rule (id, version 1)
    PUT    /admin/limit-rules/{id}    the same body: replaces the rule  -> 200 the rule (version + 1)
    GET    /admin/limit-rules                                          -> 200 {"items": [rules by id]}
    DELETE /admin/limit-rules/{id}    disables it (kept for the audit) -> 200 the rule
The change counts in every process within a second (pm/limit_rules.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from gateway.admin_requests import actor_of, conflict, parse_body, path_id
from gateway.errors import json_response, not_found
from gateway.models import TAG_PATTERN
from gateway.resources import DATABASE
from pm import limit_rules
from pm.domain import OperationType
from pm.limits import AMOUNT_MINOR_EXACT_MAX, EXEMPT_OPERATIONS, Period

INT4_MAX = 2**31 - 1


class LimitRuleBody(BaseModel):
    """The body of POST and PUT /admin/limit-rules."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    operation_type: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None
    tag: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TAG_PATTERN)] | None
    period: Literal["daily", "monthly"]
    max_amount_minor: Annotated[int, Field(ge=0, le=AMOUNT_MINOR_EXACT_MAX)]
    max_count: Annotated[int, Field(ge=0, le=INT4_MAX)] | None
    enabled: bool = True

    @field_validator("operation_type")
    @classmethod
    def _known_and_limited(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in OperationType.__members__:
            raise ValueError(f"unknown operation type; known: {', '.join(OperationType.__members__)}")
        if OperationType(value) in EXEMPT_OPERATIONS:
            raise ValueError(f"{value} is never limited")
        return value

    def fields(self) -> limit_rules.LimitRuleFields:
        return limit_rules.LimitRuleFields(
            operation_type=self.operation_type,
            tag=self.tag,
            period=Period(self.period),
            max_amount_minor=self.max_amount_minor,
            max_count=self.max_count,
            enabled=self.enabled,
        )


async def create_limit_rule(request: web.Request) -> web.Response:
    body = await parse_body(request, LimitRuleBody)
    try:
        rule = await limit_rules.create_rule(request.app[DATABASE], actor_of(request), body.fields())
    except limit_rules.TooManyRulesError as exc:
        raise conflict(str(exc)) from None
    return json_response(rule, 201)


async def update_limit_rule(request: web.Request) -> web.Response:
    rule_id = path_id(request)
    body = await parse_body(request, LimitRuleBody)
    try:
        rule = await limit_rules.update_rule(request.app[DATABASE], actor_of(request), rule_id, body.fields())
    except limit_rules.TooManyRulesError as exc:
        raise conflict(str(exc)) from None
    if rule is None:
        raise not_found()
    return json_response(rule)


async def list_limit_rules(request: web.Request) -> web.Response:
    return json_response({"items": await limit_rules.list_rules(request.app[DATABASE])})


async def delete_limit_rule(request: web.Request) -> web.Response:
    rule = await limit_rules.disable_rule(request.app[DATABASE], actor_of(request), path_id(request))
    if rule is None:
        raise not_found()
    return json_response(rule)


# (method, path, view, route name), served with the admin scope (gateway/admin_api.py).
ROUTES = (
    ("POST", "/admin/limit-rules", create_limit_rule, "create_limit_rule"),
    ("GET", "/admin/limit-rules", list_limit_rules, "list_limit_rules"),
    ("PUT", "/admin/limit-rules/{id}", update_limit_rule, "update_limit_rule"),
    ("DELETE", "/admin/limit-rules/{id}", delete_limit_rule, "delete_limit_rule"),
)
