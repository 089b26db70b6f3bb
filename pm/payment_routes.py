"""Payment routes in PostgreSQL (`pm.payment_route`), as the admin API changes them.

    route = await create_route(pool, actor, fields)             # PriorityClashError: 409
    route = await update_route(pool, actor, route_id, fields)   # None: no such route
    route = await disable_route(pool, actor, route_id)

Validation reads the enabled routes through `consumers.context.RouteTable` (re-read every second in
every process). Each change is one transaction with its audit row and a bump of `pm.rule_generation`,
bumped first so that changes are serialized in one lock order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from pm.audit import Actor, bump_rule_generation, record_change

ROUTES_MAX = 1_000  # every validation process holds all enabled routes and scans them per intent
_COLUMNS = (
    "id, version, operation_type, min_amount_minor, max_amount_minor, channel, priority, enabled,"
    " created_at, updated_at"
)


class PriorityClashError(Exception):
    """Another route of the operation type has this priority (UNIQUE(operation_type, priority))."""


class TooManyRoutesError(Exception):
    """Creating this route would pass ROUTES_MAX."""


@dataclass(frozen=True, slots=True)
class RouteFields:
    """What an operator sets; the admin API has checked each value."""

    operation_type: str
    min_amount_minor: int
    max_amount_minor: int
    channel: str
    priority: int
    enabled: bool


async def list_routes(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM pm.payment_route ORDER BY operation_type, priority LIMIT $1", ROUTES_MAX
    )
    return [route_json(row) for row in rows]


async def create_route(pool: asyncpg.Pool, actor: Actor, fields: RouteFields) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        await bump_rule_generation(conn)
        if await conn.fetchval("SELECT count(*) FROM pm.payment_route") >= ROUTES_MAX:
            raise TooManyRoutesError(f"at most {ROUTES_MAX} routes; update or disable one instead")
        row = await _write(
            conn,
            "INSERT INTO pm.payment_route"
            " (operation_type, min_amount_minor, max_amount_minor, channel, priority, enabled)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            fields,
        )
        after = route_json(row)
        await record_change(conn, actor, "route", row["id"], "create", None, after)
        return after


async def update_route(pool: asyncpg.Pool, actor: Actor, route_id: int, fields: RouteFields) -> dict[str, Any] | None:
    async with pool.acquire() as conn, conn.transaction():
        await bump_rule_generation(conn)
        before = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.payment_route WHERE id = $1 FOR UPDATE", route_id)
        if before is None:
            return None
        row = await _write(
            conn,
            "UPDATE pm.payment_route SET operation_type = $1, min_amount_minor = $2, max_amount_minor = $3,"
            " channel = $4, priority = $5, enabled = $6, version = version + 1, updated_at = now()"
            f" WHERE id = $7 RETURNING {_COLUMNS}",
            fields,
            route_id,
        )
        after = route_json(row)
        await record_change(conn, actor, "route", route_id, "update", route_json(before), after)
        return after


async def disable_route(pool: asyncpg.Pool, actor: Actor, route_id: int) -> dict[str, Any] | None:
    """Disable (routes are never deleted: the audit trail refers to them)."""
    async with pool.acquire() as conn, conn.transaction():
        await bump_rule_generation(conn)
        before = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.payment_route WHERE id = $1 FOR UPDATE", route_id)
        if before is None:
            return None
        if not before["enabled"]:
            return route_json(before)  # already disabled: nothing changes, nothing to record
        row = await conn.fetchrow(
            "UPDATE pm.payment_route SET enabled = false, version = version + 1, updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            route_id,
        )
        after = route_json(row)
        await record_change(conn, actor, "route", route_id, "delete", route_json(before), after)
        return after


async def _write(conn: asyncpg.Connection, sql: str, fields: RouteFields, *extra: Any) -> asyncpg.Record:
    try:
        return await conn.fetchrow(
            sql,
            fields.operation_type,
            fields.min_amount_minor,
            fields.max_amount_minor,
            fields.channel,
            fields.priority,
            fields.enabled,
            *extra,
        )
    except asyncpg.UniqueViolationError:
        raise PriorityClashError(
            f"{fields.operation_type} already has a route with priority {fields.priority} (disabled routes"
            " keep theirs); choose another priority or update that route"
        ) from None


def route_json(row: asyncpg.Record) -> dict[str, Any]:
    """A route as the admin API shows it and the audit trail records it."""
    return {
        "id": row["id"],
        "version": row["version"],
        "operation_type": row["operation_type"],
        "min_amount_minor": row["min_amount_minor"],
        "max_amount_minor": row["max_amount_minor"],
        "channel": row["channel"],
        "priority": row["priority"],
        "enabled": row["enabled"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
