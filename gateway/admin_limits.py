"""Admin views of limit rules (admin scope; X-User-Id, if sent, is recorded as the operator).

    POST   /admin/limit-rules         {"currency", "operation_type", "tag", "period", "max_amount_minor",
                                       "max_count", "enabled"?}      -> 201 the rule (id, version 1)
    PUT    /admin/limit-rules/{id}    the same body: replaces the rule  -> 200 the rule (version + 1)
    GET    /admin/limit-rules                                          -> 200 {"items": [rules by id]}
    DELETE /admin/limit-rules/{id}    disables it (kept for the audit) -> 200 the rule
The change counts in every process within a second (pm/store/limit_rules.py). A rule counts the intents
in its currency only, and `max_amount_minor` is in that currency's minor units: `currency` is required
(a ledger currency, else 422 UNSUPPORTED_CURRENCY), so a PUT can never move a cap into another currency
by leaving it out.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from gateway.admin_crud import crud_routes
from gateway.models import INT4_MAX, TAG_PATTERN, Currency, NoPii
from pm.config.constants import AMOUNT_MINOR_EXACT_MAX
from pm.domain.intent import OperationType
from pm.domain.limits import EXEMPT_OPERATIONS, Period
from pm.store import limit_rules


class LimitRuleBody(BaseModel):
    """The body of POST and PUT /admin/limit-rules."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    currency: Currency
    operation_type: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None
    tag: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TAG_PATTERN), NoPii] | None
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
        return limit_rules.LimitRuleFields(**{**self.model_dump(), "period": Period(self.period)})


ROUTES = crud_routes("limit-rules", "limit_rule", LimitRuleBody, limit_rules.TABLE, (limit_rules.TooManyRulesError,))
