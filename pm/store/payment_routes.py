"""Payment routes in PostgreSQL (`pm.payment_route`), as the admin API changes them.

    route = await create_route(pool, actor, fields)             # PriorityClashError: 409
    route = await update_route(pool, actor, route_id, fields)   # None: no such route
    route = await disable_route(pool, actor, route_id)

Validation (and /quote, `pm rules test`) read the enabled routes through `RouteTable` (a
`GenerationCache`: an edit is seen within a second in every process). Each change is one transaction
with its audit row and a bump of `pm.rule_generation` (pm/store/versioned_rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from pm.config.constants import ROUTES_MAX
from pm.store.generation_cache import GenerationCache
from pm.store.versioned_rows import VersionedTable


@dataclass(frozen=True, slots=True)
class Route:
    operation_type: str
    min_amount_minor: int
    max_amount_minor: int
    channel: str
    priority: int


class RouteTable:
    """The enabled routes of this process, best priority first; `refresh` before `choose`."""

    def __init__(self) -> None:
        self._cache = GenerationCache(lambda pool, _previous, _generation: load_enabled_routes(pool))
        self.routes: tuple[Route, ...] = ()

    async def refresh(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self.routes = await self._cache.current(pool)

    def choose(self, operation_type: str, amount_minor: int) -> Route | None:
        """The enabled route with the best (lowest) priority whose range holds the amount."""
        for route in self.routes:
            if (
                route.operation_type == operation_type
                and route.min_amount_minor <= amount_minor <= route.max_amount_minor
            ):
                return route
        return None


async def load_enabled_routes(pool: asyncpg.Pool | asyncpg.Connection) -> tuple[Route, ...]:
    rows = await pool.fetch(
        "SELECT operation_type, min_amount_minor, max_amount_minor, channel, priority"
        " FROM pm.payment_route WHERE enabled ORDER BY priority, id LIMIT $1",
        ROUTES_MAX + 1,
    )
    assert len(rows) <= ROUTES_MAX, "the admin API never stores more routes than this"
    return tuple(Route(**dict(row)) for row in rows)


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
