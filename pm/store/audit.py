"""The admin audit trail: every change through the admin API, written in the same transaction as the
change itself, with who made it (API key, operator), what, when, and the row before and after.

    async with pool.acquire() as conn, conn.transaction():
        ... change the row ...
        await record_change(conn, actor, "fee_rule", rule_id, "update", before, after)
        await bump_rule_generation(conn)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

Entity = Literal["fee_rule", "limit_rule", "route"]
Action = Literal["create", "update", "delete"]
AUDIT_PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class Actor:
    api_key_id: str
    operator_id: int | None


async def record_change(
    conn: asyncpg.Connection,
    actor: Actor,
    entity: Entity,
    entity_id: int,
    action: Action,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    assert conn.is_in_transaction(), "an audit row is written with the change it records"
    await conn.execute(
        "INSERT INTO pm.admin_audit (api_key_id, operator_id, entity, entity_id, action, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
        actor.api_key_id,
        actor.operator_id,
        entity,
        entity_id,
        action,
        json.dumps(before, default=str) if before is not None else None,
        json.dumps(after, default=str) if after is not None else None,
    )


async def bump_rule_generation(conn: asyncpg.Connection) -> int:
    """Tell every process that rules or routes changed (they poll the generation)."""
    assert conn.is_in_transaction()
    return await conn.fetchval("UPDATE pm.rule_generation SET generation = generation + 1 RETURNING generation")


async def current_rule_generation(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return await conn.fetchval("SELECT generation FROM pm.rule_generation")


async def audit_page(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int, before_id: int | None = None
) -> list[dict[str, Any]]:
    assert 0 < limit <= AUDIT_PAGE_MAX
    rows = await conn.fetch(
        "SELECT id, at, api_key_id, operator_id, entity, entity_id, action, before, after FROM pm.admin_audit"
        " WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before_id,
        limit,
    )
    page = []
    for row in rows:
        item = dict(row)
        item["at"] = row["at"].isoformat()
        for key in ("before", "after"):
            if isinstance(item[key], str):
                item[key] = json.loads(item[key])
        page.append(item)
    return page
