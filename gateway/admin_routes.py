"""Admin views of payment routes (admin scope; X-User-Id, if sent, is recorded as the operator).

    POST   /admin/routes         {"operation_type", "min_amount_minor", "max_amount_minor", "channel",
                                  "priority", "enabled"?}              -> 201 the route (id, version 1)
    PUT    /admin/routes/{id}    the same body: replaces the route       -> 200 the route (version + 1)
    GET    /admin/routes                                                 -> 200 {"items": [routes]}
    DELETE /admin/routes/{id}    disables it (kept for the audit)        -> 200 the route
A priority another route of the operation type holds (enabled or not) is 409 CONFLICT. Validation picks
the enabled route with the lowest priority whose range holds the amount, re-read every second in every
process (consumers/context.py).
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

import channels
from gateway.admin_requests import actor_of, conflict, parse_body, path_id
from gateway.errors import json_response, not_found
from gateway.resources import DATABASE
from pm import payment_routes
from pm.domain import OperationType

BIGINT_MAX = 2**63 - 1
INT4_MAX = 2**31 - 1


class RouteBody(BaseModel):
    """The body of POST and PUT /admin/routes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    operation_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
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
        return self

    def fields(self) -> payment_routes.RouteFields:
        return payment_routes.RouteFields(
            operation_type=self.operation_type,
            min_amount_minor=self.min_amount_minor,
            max_amount_minor=self.max_amount_minor,
            channel=self.channel,
            priority=self.priority,
            enabled=self.enabled,
        )


async def create_route(request: web.Request) -> web.Response:
    body = await parse_body(request, RouteBody)
    try:
        route = await payment_routes.create_route(request.app[DATABASE], actor_of(request), body.fields())
    except (payment_routes.PriorityClashError, payment_routes.TooManyRoutesError) as exc:
        raise conflict(str(exc)) from None
    return json_response(route, 201)


async def update_route(request: web.Request) -> web.Response:
    route_id = path_id(request)
    body = await parse_body(request, RouteBody)
    try:
        route = await payment_routes.update_route(request.app[DATABASE], actor_of(request), route_id, body.fields())
    except payment_routes.PriorityClashError as exc:
        raise conflict(str(exc)) from None
    if route is None:
        raise not_found()
    return json_response(route)


async def list_routes(request: web.Request) -> web.Response:
    return json_response({"items": await payment_routes.list_routes(request.app[DATABASE])})


async def delete_route(request: web.Request) -> web.Response:
    route = await payment_routes.disable_route(request.app[DATABASE], actor_of(request), path_id(request))
    if route is None:
        raise not_found()
    return json_response(route)


# (method, path, view, route name), served with the admin scope (gateway/admin_api.py).
ROUTES = (
    ("POST", "/admin/routes", create_route, "create_route"),
    ("GET", "/admin/routes", list_routes, "list_routes"),
    ("PUT", "/admin/routes/{id}", update_route, "update_route"),
    ("DELETE", "/admin/routes/{id}", delete_route, "delete_route"),
)
