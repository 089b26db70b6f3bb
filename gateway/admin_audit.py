"""The admin audit trail, newest first (admin scope).

    GET /admin/audit?limit=50&before=1234  -> {"items": [{"id", "at", "api_key_id", "operator_id", "entity",
                                               "entity_id", "action", "before", "after"}], "next_before"}
`next_before` is the id to pass as `before` for the next (older) page; null on the last page.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin_requests import BIGINT_MAX, ID_PATTERN
from gateway.errors import json_response, validation_failed
from gateway.resources import DATABASE
from pm.store.audit import AUDIT_PAGE_MAX, audit_page

AUDIT_PAGE_SIZE_DEFAULT = 50
# One below the store's bound: a page reads one row more to know whether another follows.
AUDIT_PAGE_SIZE_MAX = AUDIT_PAGE_MAX - 1


async def list_audit(request: web.Request) -> web.Response:
    limit = _positive(request.query.get("limit"), "limit", AUDIT_PAGE_SIZE_MAX) or AUDIT_PAGE_SIZE_DEFAULT
    before = _positive(request.query.get("before"), "before", BIGINT_MAX)
    rows = await audit_page(request.app[DATABASE], limit + 1, before)
    page = rows[:limit]
    next_before = page[-1]["id"] if len(rows) > limit else None
    return json_response({"items": page, "next_before": next_before})


def _positive(text: str | None, name: str, maximum: int) -> int | None:
    if text is None:
        return None
    if not ID_PATTERN.fullmatch(text) or int(text) > maximum:
        raise validation_failed(f"{name} must be an integer from 1 to {maximum}")
    return int(text)


# (method, path, view, route name), served with the admin scope (gateway/admin_api.py).
ROUTES = (("GET", "/admin/audit", list_audit, "admin_audit"),)
