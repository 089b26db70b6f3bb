"""Limit rules in PostgreSQL (`pm.limit_rule`): what the stages read, and what the admin API changes.

    rules = await load_enabled_rules(pool)   # the enabled ones (pm/store/rules.py keeps them fresh)
    rule = await create_rule(pool, actor, fields)             # TooManyRulesError: 409
    rule = await update_rule(pool, actor, rule_id, fields)    # None: no such rule
    rule = await disable_rule(pool, actor, rule_id)

Each change is one transaction with its audit row and a bump of `pm.rule_generation` (pm/store/versioned_rows.py),
which serializes changes, so the cap on enabled rules holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from pm.config.constants import LIMIT_RULES_ENABLED_MAX, LIMIT_RULES_LISTED_MAX
from pm.domain.limits import LimitRule, Period
from pm.store.versioned_rows import VersionedTable

_COLUMNS = "id, version, operation_type, tag, period, max_amount_minor, max_count, currency"


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
    # An ISO 4217 code of the ledger's (the admin API checked it); max_amount_minor is in its minor units.
    # Keyword-only and without a default, as in LimitRule.
    currency: str = field(kw_only=True)


async def load_enabled_rules(pool: asyncpg.Pool | asyncpg.Connection) -> tuple[LimitRule, ...]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM pm.limit_rule WHERE enabled ORDER BY id LIMIT $1", LIMIT_RULES_ENABLED_MAX + 1
    )
    # The admin API refuses more; a bigger table was edited by hand.
    assert len(rows) <= LIMIT_RULES_ENABLED_MAX, f"more than {LIMIT_RULES_ENABLED_MAX} enabled limit rules"
    return tuple(_rule(row) for row in rows)


async def _room_for_one_more(conn: asyncpg.Connection, fields: LimitRuleFields, before: asyncpg.Record | None) -> None:
    """Refuse to enable one more rule than LIMIT_RULES_ENABLED_MAX (a rule enabled before is counted already)."""
    if not fields.enabled or (before is not None and before["enabled"]):
        return
    enabled = await conn.fetchval("SELECT count(*) FROM pm.limit_rule WHERE enabled")
    if enabled >= LIMIT_RULES_ENABLED_MAX:
        raise TooManyRulesError(f"at most {LIMIT_RULES_ENABLED_MAX} limit rules may be enabled; disable one first")


TABLE = VersionedTable(
    "pm.limit_rule", "limit_rule", LimitRuleFields, "id", LIMIT_RULES_LISTED_MAX, check=_room_for_one_more
)
list_rules = TABLE.list_rows
create_rule = TABLE.create
update_rule = TABLE.update  # None: no such rule
disable_rule = TABLE.disable  # rules are never deleted: the audit trail and old counters refer to them


def _rule(row: asyncpg.Record) -> LimitRule:
    return LimitRule(
        id=row["id"],
        version=row["version"],
        operation_type=row["operation_type"],
        tag=row["tag"],
        period=Period(row["period"]),
        max_amount_minor=row["max_amount_minor"],
        max_count=row["max_count"],
        currency=row["currency"],
    )
