"""Rows an operator edits through the admin API (limit rules, routes): listed, created, replaced and
disabled, never deleted (the audit trail, and for limit rules old counters, refer to them).

    table = VersionedTable("pm.limit_rule", "limit_rule", LimitRuleFields, "id", RULES_LISTED_MAX, check=...)
    rows = await table.list_rows(pool)                          # the rows as JSON
    row = await table.create(pool, actor, fields)               # version 1
    row = await table.update(pool, actor, row_id, fields)       # version + 1; None: no such row
    row = await table.disable(pool, actor, row_id)              # version + 1; None: no such row

Every change is one transaction: the row, its audit row (before and after) and a bump of
`pm.rule_generation`, which every process polls, so a change counts everywhere within a second. The
generation row is bumped first: it serializes changes in one lock order (no deadlock between an update
and a disable of one row), so a count that `check` makes inside a change is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from pm.store.audit import Actor, Entity, bump_rule_generation, record_change

# Called inside the change, before the write: (connection, the new fields, the row before or None on
# create); raises to refuse the change.
Check = Callable[[asyncpg.Connection, Any, asyncpg.Record | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class VersionedTable:
    table: str
    entity: Entity
    # A dataclass whose fields are the columns an operator sets, `enabled` among them.
    fields_type: type
    order_by: str
    listed_max: int
    check: Check | None = None
    # Translates a UNIQUE violation of the write into the caller's error (None: it propagates).
    on_unique_violation: Callable[[Any], Exception] | None = None

    def __post_init__(self) -> None:
        assert "enabled" in self.writable, "disable() sets enabled = false"

    @property
    def writable(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self.fields_type))

    @property
    def columns(self) -> str:
        return f"id, version, {', '.join(self.writable)}, created_at, updated_at"

    async def list_rows(self, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await pool.fetch(
            f"SELECT {self.columns} FROM {self.table} ORDER BY {self.order_by} LIMIT $1", self.listed_max
        )
        return [row_json(row) for row in rows]

    async def create(self, pool: asyncpg.Pool, actor: Actor, fields: Any) -> dict[str, Any]:
        names = self.writable
        placeholders = ", ".join(f"${number}" for number in range(1, len(names) + 1))
        sql = f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({placeholders}) RETURNING {self.columns}"
        async with pool.acquire() as conn, conn.transaction():
            await bump_rule_generation(conn)
            if self.check is not None:
                await self.check(conn, fields, None)
            with self._translated(fields):
                row = await conn.fetchrow(sql, *self._values(fields))
            after = row_json(row)
            await record_change(conn, actor, self.entity, row["id"], "create", None, after)
            return after

    async def update(self, pool: asyncpg.Pool, actor: Actor, row_id: int, fields: Any) -> dict[str, Any] | None:
        """Replace every writable column (the whole row, as PUT sends it); None when there is no such row."""
        assignments = ", ".join(f"{name} = ${number}" for number, name in enumerate(self.writable, start=2))
        sql = (
            f"UPDATE {self.table} SET {assignments}, version = version + 1, updated_at = now()"
            f" WHERE id = $1 RETURNING {self.columns}"
        )
        async with pool.acquire() as conn, conn.transaction():
            await bump_rule_generation(conn)
            before = await self._locked(conn, row_id)
            if before is None:
                return None
            if self.check is not None:
                await self.check(conn, fields, before)
            with self._translated(fields):
                row = await conn.fetchrow(sql, row_id, *self._values(fields))
            assert row["version"] == before["version"] + 1
            after = row_json(row)
            await record_change(conn, actor, self.entity, row_id, "update", row_json(before), after)
            return after

    async def disable(self, pool: asyncpg.Pool, actor: Actor, row_id: int) -> dict[str, Any] | None:
        """Disable as a new version; a row already disabled is answered as it is (nothing recorded)."""
        async with pool.acquire() as conn, conn.transaction():
            # Bumped even when nothing changes: one lock order for every change; a needless bump only
            # makes processes re-read once.
            await bump_rule_generation(conn)
            before = await self._locked(conn, row_id)
            if before is None:
                return None
            if not before["enabled"]:
                return row_json(before)
            row = await conn.fetchrow(
                f"UPDATE {self.table} SET enabled = false, version = version + 1, updated_at = now()"
                f" WHERE id = $1 RETURNING {self.columns}",
                row_id,
            )
            after = row_json(row)
            await record_change(conn, actor, self.entity, row_id, "delete", row_json(before), after)
            return after

    async def _locked(self, conn: asyncpg.Connection, row_id: int) -> asyncpg.Record | None:
        return await conn.fetchrow(f"SELECT {self.columns} FROM {self.table} WHERE id = $1 FOR UPDATE", row_id)

    def _values(self, fields: Any) -> tuple[Any, ...]:
        assert isinstance(fields, self.fields_type), type(fields)
        values = (getattr(fields, name) for name in self.writable)
        return tuple(str(value) if isinstance(value, enum.Enum) else value for value in values)

    @contextlib.contextmanager
    def _translated(self, fields: Any) -> Iterator[None]:
        try:
            yield
        except asyncpg.UniqueViolationError:
            if self.on_unique_violation is None:
                raise
            raise self.on_unique_violation(fields) from None


def row_json(row: asyncpg.Record) -> dict[str, Any]:
    """A row as the admin API shows it and the audit trail records it: its columns, times in ISO 8601."""
    return {**dict(row), "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}
