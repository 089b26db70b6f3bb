"""The four views of a versioned admin resource (limit rules, routes), one definition for both.

    ROUTES = crud_routes("limit-rules", "limit_rule", LimitRuleBody, limit_rules.TABLE, (TooManyRulesError,))

    POST   /admin/{plural}         the body            -> 201 the row (id, version 1)
    PUT    /admin/{plural}/{id}    the same body       -> 200 the row (version + 1); 404 no such row
    GET    /admin/{plural}                             -> 200 {"items": [rows]}
    DELETE /admin/{plural}/{id}    disables it         -> 200 the row; 404 no such row
A `conflicts` error raised by the store (a priority taken, too many rows) is 409 CONFLICT.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from gateway.admin_requests import actor_of, conflict, parse_body, path_id
from gateway.errors import Handler, json_response, not_found
from gateway.resources import DATABASE
from pm.store.versioned_rows import VersionedTable


class FieldsBody(Protocol):
    def fields(self) -> Any:
        """The store's fields dataclass, from the checked body."""
        ...


def crud_routes(
    plural: str,
    singular: str,
    body_model: type[BaseModel],
    table: VersionedTable,
    conflicts: tuple[type[Exception], ...],
) -> tuple[tuple[str, str, Handler, str], ...]:
    """(method, path, view, route name) of the four views, served with the admin scope (admin_api.py)."""
    assert hasattr(body_model, "fields"), "the body turns itself into the store's fields"

    async def create(request: web.Request) -> web.Response:
        body: FieldsBody = await parse_body(request, body_model)  # type: ignore[assignment]
        try:
            row = await table.create(request.app[DATABASE], actor_of(request), body.fields())
        except conflicts as exc:
            raise conflict(str(exc)) from None
        return json_response(row, 201)

    async def update(request: web.Request) -> web.Response:
        row_id = path_id(request)
        body: FieldsBody = await parse_body(request, body_model)  # type: ignore[assignment]
        try:
            row = await table.update(request.app[DATABASE], actor_of(request), row_id, body.fields())
        except conflicts as exc:
            raise conflict(str(exc)) from None
        if row is None:
            raise not_found()
        return json_response(row)

    async def listing(request: web.Request) -> web.Response:
        return json_response({"items": await table.list_rows(request.app[DATABASE])})

    async def delete(request: web.Request) -> web.Response:
        row = await table.disable(request.app[DATABASE], actor_of(request), path_id(request))
        if row is None:
            raise not_found()
        return json_response(row)

    return (
        ("POST", f"/admin/{plural}", create, f"create_{singular}"),
        ("GET", f"/admin/{plural}", listing, f"list_{singular}s"),
        ("PUT", f"/admin/{plural}/{{id}}", update, f"update_{singular}"),
        ("DELETE", f"/admin/{plural}/{{id}}", delete, f"delete_{singular}"),
    )
