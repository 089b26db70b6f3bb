"""Payment routes in PostgreSQL (`pm.payment_route`), as the admin API changes them.

    route = await create_route(pool, actor, fields)             # PriorityClashError: 409
    route = await update_route(pool, actor, route_id, fields)   # None: no such route
    route = await disable_route(pool, actor, route_id)

Validation (and /quote, `pm rules test`) read the enabled routes from the process's rules snapshot
(pm/store/rules.py: an edit is seen within a second in every process). Each change is one transaction
with its audit row and a bump of `pm.rule_generation` (pm/store/versioned_rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from pm.config.constants import ROUTES_MAX
from pm.domain.rules import Route
from pm.store.versioned_rows import VersionedTable


async def load_enabled_routes(pool: asyncpg.Pool | asyncpg.Connection) -> tuple[Route, ...]:
    rows = await pool.fetch(
        "SELECT operation_type, min_amount_minor, max_amount_minor, channel, priority, currencies"
        " FROM pm.payment_route WHERE enabled ORDER BY priority, id LIMIT $1",
        ROUTES_MAX + 1,
    )
    assert len(rows) <= ROUTES_MAX, "the admin API never stores more routes than this"
    return tuple(Route(**{**dict(row), "currencies": frozenset(row["currencies"])}) for row in rows)


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
    # ISO 4217 codes, sorted and unique, each one the channel carries (the admin API checked them).
    currencies: list[str] = field(kw_only=True)


async def _room_for_one_more(conn: asyncpg.Connection, fields: RouteFields, before: asyncpg.Record | None) -> None:
    if before is None and await conn.fetchval("SELECT count(*) FROM pm.payment_route") >= ROUTES_MAX:
        raise TooManyRoutesError(f"at most {ROUTES_MAX} routes; update or disable one instead")


def _priority_clash(fields: RouteFields) -> PriorityClashError:
    return PriorityClashError(
        f"{fields.operation_type} already has a route with priority {fields.priority} (disabled routes"
        " keep theirs); choose another priority or update that route"
    )


TABLE = VersionedTable(
    "pm.payment_route",
    "route",
    RouteFields,
    "operation_type, priority",
    ROUTES_MAX,
    check=_room_for_one_more,
    on_unique_violation=_priority_clash,
)
list_routes = TABLE.list_rows
create_route = TABLE.create
update_route = TABLE.update  # None: no such route
disable_route = TABLE.disable  # routes are never deleted: the audit trail refers to them
