"""Fee rules in PostgreSQL: the current version in pm.fee_rule, every version in pm.fee_rule_version.

    rules = await load_enabled_rules(pool)                       # what pricing uses
    saved = await create_rule(pool, actor, fields)               # version 1
    saved = await update_rule(pool, actor, rule_id, fields)      # version n + 1 (None: no such rule)
    saved = await disable_rule(pool, actor, rule_id)             # version n + 1, enabled = false

Every change is one transaction: the row, its version row, the audit row (pm.store.audit.record_change) and
the rule generation, which every process polls to reload its rules (pm.store.rule_cache). Nothing here checks
that the expressions compile: callers do that first (pm.domain.pricing.check_fields), with the engine.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from pm.config.constants import FEE_RULE_VERSIONS_LISTED_MAX, FEE_RULES_ENABLED_MAX, FEE_RULES_LISTED_MAX
from pm.domain.pricing import FeeKind, FeeRule, FeeRuleFields
from pm.store.audit import Action, Actor, bump_rule_generation, record_change

# The columns an author sets, in the order of FeeRuleFields (and of `_values`).
_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(FeeRuleFields))
_FIELDS = ", ".join(_FIELD_NAMES)
_COLUMNS = f"id, version, {_FIELDS}, created_at, updated_at"
# $1.. for INSERT; $2.. for UPDATE (where $1 is the id).
_INSERT_PARAMETERS = ", ".join(f"${number}" for number in range(1, len(_FIELD_NAMES) + 1))
_UPDATE_PARAMETERS = ", ".join(f"${number}" for number in range(2, len(_FIELD_NAMES) + 2))
Connection = asyncpg.Connection | asyncpg.Pool


class TooManyRulesError(Exception):
    """Enabling one more rule would pass FEE_RULES_ENABLED_MAX."""


@dataclass(frozen=True, slots=True)
class StoredFeeRule:
    rule: FeeRule
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        stamps = {"created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}
        return {**rule_json(self.rule), **stamps}


def rule_json(rule: FeeRule) -> dict[str, Any]:
    """One version of a rule as JSON: the admin API's answer, the version row and the audit trail."""
    data = {"id": rule.id, "version": rule.version, **asdict(rule)}  # id and version first, as before
    data["kind"] = str(rule.kind)
    for key in ("valid_from", "valid_to"):
        data[key] = data[key].isoformat() if data[key] is not None else None
    return data


def _values(fields: FeeRuleFields) -> tuple[Any, ...]:
    values = (getattr(fields, name) for name in _FIELD_NAMES)
    return tuple(str(value) if isinstance(value, FeeKind) else value for value in values)


def _stored(row: asyncpg.Record) -> StoredFeeRule:
    values = dict(row)
    created_at, updated_at = values.pop("created_at"), values.pop("updated_at")
    values["kind"] = FeeKind(values["kind"])
    return StoredFeeRule(FeeRule(**values), created_at, updated_at)


async def load_enabled_rules(conn: Connection) -> list[FeeRule]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM pm.fee_rule WHERE enabled ORDER BY priority, id LIMIT $1", FEE_RULES_ENABLED_MAX + 1
    )
    assert len(rows) <= FEE_RULES_ENABLED_MAX, "the admin API never enables more rules than this"
    return [_stored(row).rule for row in rows]


async def list_rules(conn: Connection) -> list[StoredFeeRule]:
    """Every rule's current version (disabled ones too), enabled first, then by kind and priority."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM pm.fee_rule ORDER BY enabled DESC, kind, priority, id LIMIT $1", FEE_RULES_LISTED_MAX
    )
    return [_stored(row) for row in rows]


async def get_rule(conn: Connection, rule_id: int) -> StoredFeeRule | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.fee_rule WHERE id = $1", rule_id)
    return _stored(row) if row is not None else None


async def rule_versions(conn: Connection, rule_id: int) -> list[dict[str, Any]]:
    """The rule's versions, newest first: `{"version", "currency", "created_at", "definition"}` each. The
    currency comes from its column: a version saved before sql/0022 has none in its definition (THB)."""
    rows = await conn.fetch(
        "SELECT version, currency, created_at, definition FROM pm.fee_rule_version WHERE rule_id = $1"
        " ORDER BY version DESC LIMIT $2",
        rule_id,
        FEE_RULE_VERSIONS_LISTED_MAX,
    )
    versions = []
    for row in rows:
        definition = row["definition"]
        versions.append(
            {
                "version": row["version"],
                "currency": row["currency"],
                "created_at": row["created_at"].isoformat(),
                "definition": json.loads(definition) if isinstance(definition, str) else definition,
            }
        )
    return versions


async def create_rule(pool: asyncpg.Pool, actor: Actor, fields: FeeRuleFields) -> StoredFeeRule:
    async with pool.acquire() as conn, conn.transaction():
        await _serialize_rule_changes(conn)
        if fields.enabled:
            await _check_room_for_one_more(conn)
        row = await conn.fetchrow(
            f"INSERT INTO pm.fee_rule (version, {_FIELDS}) VALUES (1, {_INSERT_PARAMETERS}) RETURNING {_COLUMNS}",
            *_values(fields),
        )
        saved = _stored(row)
        await _record_version(conn, actor, "create", None, saved)
    return saved


async def update_rule(pool: asyncpg.Pool, actor: Actor, rule_id: int, fields: FeeRuleFields) -> StoredFeeRule | None:
    """A new version with these fields (the whole rule, as PUT sends it); None when there is no such rule."""
    async with pool.acquire() as conn, conn.transaction():
        await _serialize_rule_changes(conn)
        before = await _locked(conn, rule_id)
        if before is None:
            return None
        if fields.enabled and not before.rule.enabled:
            await _check_room_for_one_more(conn)
        row = await conn.fetchrow(
            f"UPDATE pm.fee_rule SET version = version + 1, updated_at = now(), ({_FIELDS}) ="
            f" ({_UPDATE_PARAMETERS}) WHERE id = $1 RETURNING {_COLUMNS}",
            rule_id,
            *_values(fields),
        )
        saved = _stored(row)
        assert saved.rule.version == before.rule.version + 1
        await _record_version(conn, actor, "update", before, saved)
    return saved


async def disable_rule(pool: asyncpg.Pool, actor: Actor, rule_id: int) -> StoredFeeRule | None:
    """Disable the rule as a new version (history kept); a disabled rule is answered as it is."""
    async with pool.acquire() as conn, conn.transaction():
        await _serialize_rule_changes(conn)
        before = await _locked(conn, rule_id)
        if before is None or not before.rule.enabled:
            return before
        row = await conn.fetchrow(
            f"UPDATE pm.fee_rule SET version = version + 1, updated_at = now(), enabled = false WHERE id = $1"
            f" RETURNING {_COLUMNS}",
            rule_id,
        )
        saved = _stored(row)
        await _record_version(conn, actor, "delete", before, saved)
    return saved


async def _serialize_rule_changes(conn: asyncpg.Connection) -> None:
    # First in every change: the generation row's lock makes rule changes take turns, so the count of
    # enabled rules below is exact, and the bump commits with the change (every process then reloads).
    await bump_rule_generation(conn)


async def _check_room_for_one_more(conn: asyncpg.Connection) -> None:
    enabled = await conn.fetchval("SELECT count(*) FROM pm.fee_rule WHERE enabled")
    if enabled >= FEE_RULES_ENABLED_MAX:
        raise TooManyRulesError(f"at most {FEE_RULES_ENABLED_MAX} fee rules may be enabled; disable one first")


async def _locked(conn: asyncpg.Connection, rule_id: int) -> StoredFeeRule | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM pm.fee_rule WHERE id = $1 FOR UPDATE", rule_id)
    return _stored(row) if row is not None else None


async def _record_version(
    conn: asyncpg.Connection, actor: Actor, action: Action, before: StoredFeeRule | None, after: StoredFeeRule
) -> None:
    definition = rule_json(after.rule)
    await conn.execute(
        "INSERT INTO pm.fee_rule_version (rule_id, version, currency, definition) VALUES ($1, $2, $3, $4::jsonb)",
        after.rule.id,
        after.rule.version,
        after.rule.currency,
        json.dumps(definition),
    )
    before_json = rule_json(before.rule) if before is not None else None
    await record_change(conn, actor, "fee_rule", after.rule.id, action, before_json, definition)
