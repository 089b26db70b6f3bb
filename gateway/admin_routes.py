"""Admin views of payment routes (admin scope; X-User-Id, if sent, is recorded as the operator).

    POST   /admin/routes         {"operation_type", "currencies", "min_amount_minor", "max_amount_minor",
                                  "channel", "priority", "enabled"?}   -> 201 the route (id, version 1)
    PUT    /admin/routes/{id}    the same body: replaces the route       -> 200 the route (version + 1)
    GET    /admin/routes                                                 -> 200 {"items": [routes]}
    DELETE /admin/routes/{id}    disables it (kept for the audit)        -> 200 the route
A priority another route of the operation type holds (enabled or not) is 409 CONFLICT. `currencies` (1 to
3, no repeats; stored sorted) are the ones the route serves: each a ledger currency its channel carries
(`Channel.currencies`), else 422 UNSUPPORTED_CURRENCY. Validation picks the enabled route with the lowest
priority that serves the intent's currency and whose range holds the amount, re-read every second in every
process (consumers/context.py).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

import channels
from gateway.admin_crud import crud_routes
from gateway.models import BIGINT_MAX, INT4_MAX, Currency, unsupported_currency
from ledger.accounts import CURRENCY_LEDGER
from pm.domain.intent import OperationType
from pm.store import payment_routes


class RouteBody(BaseModel):
    """The body of POST and PUT /admin/routes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    operation_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    currencies: Annotated[list[Currency], Field(min_length=1, max_length=len(CURRENCY_LEDGER))]
    min_amount_minor: Annotated[int, Field(ge=1, le=BIGINT_MAX)]
    max_amount_minor: Annotated[int, Field(ge=1, le=BIGINT_MAX)]
    channel: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    priority: Annotated[int, Field(ge=0, le=INT4_MAX, description="lower wins")]
    enabled: bool = True

    @model_validator(mode="after")
    def _coherent(self) -> RouteBody:
        if self.operation_type not in OperationType.__members__:
            raise ValueError(f"unknown operation_type; known: {', '.join(OperationType.__members__)}")
        if self.max_amount_minor < self.min_amount_minor:
            raise ValueError("max_amount_minor must not be below min_amount_minor")
        # A route to a channel that cannot carry the operation would reject every intent it catches.
        channel = channels.channel_named(self.channel)
        if channel is None or OperationType(self.operation_type) not in channel.operation_types:
            serving = sorted(name for name, c in channels.REGISTRY.items() if self.operation_type in c.operation_types)
            raise ValueError(f"channel must be one that serves {self.operation_type}: {', '.join(serving) or 'none'}")
        if len(set(self.currencies)) != len(self.currencies):
            raise ValueError("currencies must not repeat a currency")
        # Its PSP cannot carry the others: every intent the route caught in one would be refused.
        uncarried = sorted(set(self.currencies) - channel.currencies)
        if uncarried:
            carried = ", ".join(sorted(channel.currencies))
            raise unsupported_currency(f"channel {self.channel} carries only {carried}, not {', '.join(uncarried)}")
        return self

    def fields(self) -> payment_routes.RouteFields:
        return payment_routes.RouteFields(**{**self.model_dump(), "currencies": sorted(self.currencies)})


ROUTES = crud_routes(
    "routes",
    "route",
    RouteBody,
    payment_routes.TABLE,
    (payment_routes.PriorityClashError, payment_routes.TooManyRoutesError),
)
