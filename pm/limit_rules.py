"""Limit rules in PostgreSQL (`pm.limit_rule`): what the stages read, and what the admin API changes.

    rules = await cache.current(pool)        # the enabled rules; at most LIMIT_RULES_REFRESH_S old
    rule = await create_rule(pool, actor, fields)
    rule = await update_rule(pool, actor, rule_id, fields)    # None: no such rule
    rule = await disable_rule(pool, actor, rule_id)

Every change is one transaction: the row (its version grows by one), the audit row (before and after)
and a bump of `pm.rule_generation`, which every process polls, so a change counts everywhere within a
second. The generation row is bumped first: it serializes changes, so the cap on enabled rules holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from pm.audit import Actor, bump_rule_generation, current_rule_generation, record_change
from pm.constants import LIMIT_RULES_ENABLED_MAX, LIMIT_RULES_REFRESH_S
from pm.limits import LimitRule, Period

RULES_LISTED_MAX = 1_000
_COLUMNS = "id, version, operation_type, tag, period, max_amount_minor, max_count, enabled, created_at, updated_at"


class TooManyRulesError(Exception):
    """Enabling this rule would pass LIMIT_RULES_ENABLED_MAX."""


@dataclass(frozen=True, slots=True)
class LimitRuleFields:
    """What an operator sets; the admin API has checked each value."""

    operation_type: str | None
    tag: str | None
    period: Period
    max_amount_minor: int
    max_count: int | None
    enabled: bool


class LimitRuleCache:
    """The enabled rules of this process, re-read when `pm.rule_generation` moves (polled at most once
    per LIMIT_RULES_REFRESH_S)."""

    def __init__(self) -> None:
        self._rules: tuple[LimitRule, ...] = ()
        self._generation: int | None = None
        self._checked_at_s = float("-inf")

    async def current(self, pool: asyncpg.Pool) -> tuple[LimitRule, ...]:
        """The enabled rules; a failed read raises (the batch is retried): never limits on rules unread."""
        started_s = time.monotonic()
        if started_s - self._checked_at_s < LIMIT_RULES_REFRESH_S:
            return self._rules
        # The generation before the rules: a change committed in between is read again next time,
        # never missed.
        generation = await current_rule_generation(pool)
        if generation != self._generation:
            self._rules = await load_enabled_rules(pool)
            self._generation = generation
        # The time before the read, so "at most a second old" counts from the snapshot, however slow.
        self._checked_at_s = started_s
        return self._rules


async def load_enabled_rules(pool: asyncpg.Pool | asyncpg.Connection) -> tuple[LimitRule, ...]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM pm.limit_rule WHERE enabled ORDER BY id LIMIT $1", LIMIT_RULES_ENABLED_MAX + 1
    )
    # The admin API refuses more; a bigger table was edited by hand.
    assert len(rows) <= LIMIT_RULES_ENABLED_MAX, f"more than {LIMIT_RULES_ENABLED_MAX} enabled limit rules"
    return tuple(_rule(row) for row in rows)


async def list_rules(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM pm.limit_rule ORDER BY id LIMIT $1", RULES_LISTED_MAX)
    return [rule_json(row) for row in rows]


async def create_rule(pool: asyncpg.Pool, actor: Actor, fields: LimitRuleFields) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        await bump_rule_generation(conn)
        if fields.enabled:
            await _check_room(conn, excluding_id=None)
        row = await conn.fetchrow(
            "INSERT INTO pm.limit_rule (operation_type, tag, period, max_amount_minor, max_count, enabled)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            *_values(fields),
        )
        after = rule_json(row)
        await record_change(conn, actor, "limit_rule", row["id"], "create", None, after)
        return after


async def update_rule(pool: asyncpg.Pool, actor: Actor, rule_id: int, fields: LimitRuleFields) -> dict[str, Any] | None:
    async with pool.acquire() as conn, conn.transaction():
        await bump_rule_generation(conn)
        before = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.limit_rule WHERE id = $1 FOR UPDATE", rule_id)
        if before is None:
            return None
        if fields.enabled and not before["enabled"]:
            await _check_room(conn, excluding_id=rule_id)
        row = await conn.fetchrow(
            "UPDATE pm.limit_rule SET operation_type = $2, tag = $3, period = $4, max_amount_minor = $5,"
            " max_count = $6, enabled = $7, version = version + 1, updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            rule_id,
            *_values(fields),
        )
        after = rule_json(row)
        await record_change(conn, actor, "limit_rule", rule_id, "update", rule_json(before), after)
        return after


async def disable_rule(pool: asyncpg.Pool, actor: Actor, rule_id: int) -> dict[str, Any] | None:
    """Disable (rules are never deleted: the audit trail and old counters refer to them)."""
    async with pool.acquire() as conn, conn.transaction():
        # Bumped first like every change (one lock order: no deadlock with a concurrent update); a
        # needless bump only makes processes re-read the rules once.
        await bump_rule_generation(conn)
        before = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.limit_rule WHERE id = $1 FOR UPDATE", rule_id)
        if before is None:
            return None
        if not before["enabled"]:
            return rule_json(before)  # already disabled: nothing changes, nothing to record
        row = await conn.fetchrow(
            "UPDATE pm.limit_rule SET enabled = false, version = version + 1, updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            rule_id,
        )
        after = rule_json(row)
        await record_change(conn, actor, "limit_rule", rule_id, "delete", rule_json(before), after)
        return after


async def _check_room(conn: asyncpg.Connection, excluding_id: int | None) -> None:
    enabled = await conn.fetchval(
        "SELECT count(*) FROM pm.limit_rule WHERE enabled AND id IS DISTINCT FROM $1", excluding_id
    )
    if enabled >= LIMIT_RULES_ENABLED_MAX:
        raise TooManyRulesError(f"at most {LIMIT_RULES_ENABLED_MAX} limit rules may be enabled; disable one first")


def _values(fields: LimitRuleFields) -> tuple[Any, ...]:
    return (
        fields.operation_type,
        fields.tag,
        str(fields.period),
        fields.max_amount_minor,
        fields.max_count,
        fields.enabled,
    )


def _rule(row: asyncpg.Record) -> LimitRule:
    return LimitRule(
        id=row["id"],
        version=row["version"],
        operation_type=row["operation_type"],
        tag=row["tag"],
        period=Period(row["period"]),
        max_amount_minor=row["max_amount_minor"],
        max_count=row["max_count"],
    )


def rule_json(row: asyncpg.Record) -> dict[str, Any]:
    """A rule as the admin API shows it and the audit trail records it."""
    return {
        "id": row["id"],
        "version": row["version"],
        "operation_type": row["operation_type"],
        "tag": row["tag"],
        "period": row["period"],
        "max_amount_minor": row["max_amount_minor"],
        "max_count": row["max_count"],
        "enabled": row["enabled"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
