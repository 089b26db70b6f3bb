"""Proves that `pm db migrate` applies sql/ once, even when runners race, and refuses edited applied files;
and that the issue-10 migrations carry existing rows over: keys get the operation types they could create
(merchant keys only their own two) and a grace for a previous secret that never expired, and idempotency
records the X-User-Id their request carried; that 0014 gives the retention purges their indexes; that 0015
gives existing keys the default request rate; and that 0017 puts existing limit rules in THB and gives
existing routes the currencies they served (the PSP channels THB only); that 0022 puts existing fee rules and
their versions in THB."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from pm.store import fee_rules, retention
from pm.store.migrate import (
    MIGRATIONS_DIR,
    MigrationChecksumError,
    MigrationFailedError,
    MigrationUnknownError,
    migrate,
)

CreateDatabase = Callable[[], Awaitable[str]]

# DESIGN.md §3: every operation type has a default route to its channel.
DEFAULT_ROUTES = {
    "P2P_TRANSFER": "INTERNAL_P2P",
    "IPPS_WITHDRAWAL": "IPPS_TRANSFER",
    "THAI_QR_PAY": "IPPS_TRANSFER",
    "QP_TOPUP": "QP_TRANSFER",
    "MINIAPP_CHARGE": "MINIAPP",
    "MINIAPP_CREDIT": "MINIAPP",
    "ADMIN_ADJUSTMENT": "ADJUSTMENT",
    "REFUND": "REFUND",  # sql/0019
}
ALL_NAMES = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))


@pytest.fixture
async def empty_database(fresh_database: CreateDatabase) -> str:
    return await fresh_database()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    connections: list[asyncpg.Connection] = []

    async def open_connection(database_url: str) -> asyncpg.Connection:
        connection = await asyncpg.connect(database_url, timeout=10)
        connections.append(connection)
        return connection

    yield open_connection
    for connection in connections:
        await connection.close(timeout=10)


async def _recorded(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    return await connection.fetch("SELECT version, name, checksum, applied_at FROM pm.schema_migrations ORDER BY 1")


async def test_migrates_an_empty_database_and_seeds_default_routes(empty_database: str, connect) -> None:
    assert await migrate(empty_database) == ALL_NAMES
    connection = await connect(empty_database)
    routes = await connection.fetch(
        "SELECT operation_type, channel, min_amount_minor, enabled FROM pm.payment_route ORDER BY id"
    )
    assert {row["operation_type"]: row["channel"] for row in routes} == DEFAULT_ROUTES
    assert len(routes) == len(DEFAULT_ROUTES)
    assert all(row["enabled"] and row["min_amount_minor"] == 1 for row in routes)
    first = (await _recorded(connection))[0]
    assert first["name"] == "0001_pm_schema.sql"
    assert first["checksum"] == hashlib.sha256((MIGRATIONS_DIR / first["name"]).read_bytes()).hexdigest()


async def test_second_run_applies_nothing_and_changes_nothing(empty_database: str, connect) -> None:
    await migrate(empty_database)
    connection = await connect(empty_database)
    recorded_before = await _recorded(connection)
    routes_before = await connection.fetch("SELECT * FROM pm.payment_route ORDER BY id")
    assert await migrate(empty_database) == []
    assert await _recorded(connection) == recorded_before
    assert await connection.fetch("SELECT * FROM pm.payment_route ORDER BY id") == routes_before


async def test_concurrent_runners_apply_each_file_exactly_once(empty_database: str, connect) -> None:
    runner_count = 4
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(runner_count)))
    applied_names = sorted(name for result in results for name in result)
    assert applied_names == ALL_NAMES
    assert sum(1 for result in results if result) == 1
    connection = await connect(empty_database)
    assert len(await _recorded(connection)) == len(ALL_NAMES)
    assert await connection.fetchval("SELECT count(*) FROM pm.payment_route") == len(DEFAULT_ROUTES)


async def test_an_applied_file_that_was_edited_is_refused(empty_database: str, tmp_path: Path, connect) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(empty_database, directory)
    connection = await connect(empty_database)
    recorded_before = await _recorded(connection)
    edited = directory / "0001_pm_schema.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    _write(directory, "9001_after_the_edit.sql", "CREATE TABLE pm.after_the_edit (id int);")
    with pytest.raises(MigrationChecksumError, match=r"0001_pm_schema\.sql"):
        await migrate(empty_database, directory)
    # Refused before anything ran: the later file was not applied either.
    assert await _recorded(connection) == recorded_before
    assert await connection.fetchval("SELECT to_regclass('pm.after_the_edit')") is None


async def test_a_failing_file_leaves_nothing_behind(empty_database: str, tmp_path: Path, connect) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    _write(directory, "9001_broken.sql", "CREATE TABLE pm.half_done (id int);\nSELECT 1 / 0;")
    with pytest.raises(MigrationFailedError, match=r"9001_broken\.sql"):
        await migrate(empty_database, directory)
    connection = await connect(empty_database)
    assert [row["name"] for row in await _recorded(connection)] == ALL_NAMES
    assert await connection.fetchval("SELECT to_regclass('pm.half_done')") is None
    # Fixed forward (the file was never recorded, so editing it is allowed), it applies.
    _write(directory, "9001_broken.sql", "CREATE TABLE pm.half_done (id int);")
    assert await migrate(empty_database, directory) == ["9001_broken.sql"]


async def test_a_database_ahead_of_this_checkout_is_refused(empty_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, directory)
    _write(directory, "9001_newer.sql", "SELECT 1;")
    await migrate(empty_database, directory)
    with pytest.raises(MigrationUnknownError, match=r"9001_newer\.sql"):
        await migrate(empty_database)


async def test_route_table_refuses_inverted_ranges_and_priority_ties(postgres_url: str, connect) -> None:
    connection = await connect(postgres_url)
    insert = (
        "INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority,"
        " currencies) VALUES ($1, $2, $3, $4, $5, $6)"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(insert, "P2P_TRANSFER", 500, 100, "INTERNAL_P2P", 1, ["THB"])
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(insert, "p2p transfer", 1, 100, "INTERNAL_P2P", 1, ["THB"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(insert, "P2P_TRANSFER", 1, 100, "INTERNAL_P2P", 100, ["THB"])


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, encoding="utf-8")


async def _migrated_to(database_url: str, tmp_path: Path, last_version: int) -> None:
    """Apply only the files up to `last_version`, as a database that ran an older checkout."""
    directory = tmp_path / f"sql-{last_version}"
    directory.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) <= last_version:
            shutil.copy(path, directory / path.name)
    await migrate(database_url, directory)


async def test_0011_gives_existing_keys_what_they_could_do_except_merchants(
    empty_database: str, tmp_path: Path, connect
) -> None:
    await _migrated_to(empty_database, tmp_path, 10)
    connection = await connect(empty_database)
    keys_before = {
        # name: (scopes, merchant_id, previous secret)
        "auth-center": (["intents:write", "intents:read", "balance:read"], None, None),
        "admin": (["admin"], None, "old-admin-secret"),
        "mini-app": (["intents:write", "intents:read"], 77, None),  # could send P2P as anyone: the hole
        "mini-app-admin": (["admin"], 78, None),
        "mini-app-reader": (["intents:read"], 79, None),
        "nginx": (["balance:read", "intents:read"], None, None),
    }
    for name, (scopes, merchant_id, previous) in keys_before.items():
        await connection.execute(
            "INSERT INTO pm.api_key (key_id, name, scopes, secret, previous_secret, merchant_id, rotated_at)"
            " VALUES ($1, $5, $2, 's', $3, $4, CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)",
            f"pmk_{name.replace('-', '_')}", scopes, previous, merchant_id, name,
        )  # fmt: skip
    await migrate(empty_database)
    rows = await connection.fetch("SELECT name, operations, previous_secret_expires_at FROM pm.api_key")
    operations = {row["name"]: sorted(row["operations"]) for row in rows}
    user_types = ["IPPS_WITHDRAWAL", "P2P_TRANSFER", "QP_TOPUP", "THAI_QR_PAY"]
    assert operations == {
        "auth-center": user_types,
        "admin": sorted([*user_types, "ADMIN_ADJUSTMENT"]),
        "mini-app": ["MINIAPP_CHARGE", "MINIAPP_CREDIT"],
        "mini-app-admin": ["MINIAPP_CHARGE", "MINIAPP_CREDIT"],
        "mini-app-reader": [],
        "nginx": [],
    }
    # Every name is an operation type the code knows.
    assert {name for names in operations.values() for name in names} <= set(DEFAULT_ROUTES)
    expiries = {row["name"]: row["previous_secret_expires_at"] for row in rows}
    # A previous secret that never expired gets one default grace from the migration, then stops.
    now = await connection.fetchval("SELECT now()")
    assert 86_000 < (expiries.pop("admin") - now).total_seconds() <= 86_400
    assert set(expiries.values()) == {None}


async def test_0012_keeps_existing_idempotency_records_findable_per_user(
    empty_database: str, tmp_path: Path, connect
) -> None:
    await _migrated_to(empty_database, tmp_path, 10)
    connection = await connect(empty_database)
    # What the gateway wrote before: the X-User-Id sits on the intent where `parties` put it.
    cases = [
        # operation type, sender, recipient, operator, the X-User-Id the request carried
        ("P2P_TRANSFER", 11, 12, None, 11),
        ("IPPS_WITHDRAWAL", 13, None, None, 13),
        ("THAI_QR_PAY", 14, None, None, 14),
        ("QP_TOPUP", None, 15, None, 15),
        ("MINIAPP_CHARGE", 16, None, None, 16),
        ("MINIAPP_CREDIT", None, 17, None, 17),
        ("ADMIN_ADJUSTMENT", None, 18, 9, 9),
        ("ADMIN_ADJUSTMENT", None, 19, None, 0),  # sent without X-User-Id
    ]
    for n, (operation, sender, recipient, operator, _) in enumerate(cases):
        intent_id = uuid.uuid4()
        await connection.execute(
            "INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id,"
            " recipient_id, operator_id, api_key_id, idempotency_key) VALUES ($1, 'CREATED', 1, $2, 100, 'THB',"
            " $3, $4, $5, 'pmk_old', $6)",
            intent_id, operation, sender, recipient, operator, f"key-{n}",
        )  # fmt: skip
        await connection.execute(
            "INSERT INTO pm.idempotency (api_key_id, idempotency_key, request_hash, intent_id)"
            " VALUES ('pmk_old', $1, 'h', $2)",
            f"key-{n}", intent_id,
        )  # fmt: skip
    await migrate(empty_database)
    rows = await connection.fetch("SELECT idempotency_key, user_id FROM pm.idempotency ORDER BY idempotency_key")
    assert [(row["idempotency_key"], row["user_id"]) for row in rows] == [
        (f"key-{n}", case[4]) for n, case in enumerate(cases)
    ]
    # Unique per (key, user, Idempotency-Key) now: another user's record under the same key is its own.
    await connection.execute(
        "INSERT INTO pm.idempotency (api_key_id, user_id, idempotency_key, request_hash)"
        " VALUES ('pmk_old', 99, 'key-0', 'h')"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(
            "INSERT INTO pm.idempotency (api_key_id, user_id, idempotency_key, request_hash)"
            " VALUES ('pmk_old', 11, 'key-0', 'h')"
        )


async def test_0014_lets_the_retention_purges_read_only_what_they_delete(empty_database: str, connect) -> None:
    await migrate(empty_database)
    connection = await connect(empty_database)
    # Empty tables would be scanned whatever the indexes; with scans priced out, a purge's plan shows
    # the index it can use (none without 0014: the plan falls back to the scan).
    await connection.execute("SET enable_seqscan = off")
    for sql, index in (
        (retention._PURGE_DELIVERED_OUTBOX_SQL, "outbox_delivered"),
        (retention._PURGE_PSP_EVENTS_SQL, "psp_event_received"),
    ):
        plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {sql}", 3600.0, 10))
        assert index in plan, plan


async def test_0015_gives_existing_keys_the_default_rate_and_refuses_rates_out_of_range(
    empty_database: str, tmp_path: Path, connect
) -> None:
    await _migrated_to(empty_database, tmp_path, 14)
    connection = await connect(empty_database)
    await connection.execute(
        "INSERT INTO pm.api_key (key_id, name, scopes, secret) VALUES ('pmk_before', 'before', '{intents:write}', 's')"
    )
    await migrate(empty_database)
    assert await connection.fetchval("SELECT requests_per_s FROM pm.api_key WHERE key_id = 'pmk_before'") == 1_000
    for rate in (0, -1, 100_001):
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE pm.api_key SET requests_per_s = $1 WHERE key_id = 'pmk_before'", rate)
    await connection.execute("UPDATE pm.api_key SET requests_per_s = 100000 WHERE key_id = 'pmk_before'")


async def test_0017_puts_limit_rules_in_thb_and_routes_in_the_currencies_they_served(
    empty_database: str, tmp_path: Path, connect
) -> None:
    await _migrated_to(empty_database, tmp_path, 16)
    connection = await connect(empty_database)
    rule_id = await connection.fetchval(
        "INSERT INTO pm.limit_rule (operation_type, period, max_amount_minor) VALUES ('P2P_TRANSFER', 'daily', 500)"
        " RETURNING id"
    )
    await connection.execute(
        "INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority, enabled)"
        " VALUES ('IPPS_WITHDRAWAL', 1, 1000, 'IPPS_TRANSFER', 5, false)"
    )
    generation = await connection.fetchval("SELECT generation FROM pm.rule_generation")
    await _migrated_to(empty_database, tmp_path, 17)
    assert await connection.fetchval("SELECT currency FROM pm.limit_rule WHERE id = $1", rule_id) == "THB"
    routes = await connection.fetch("SELECT channel, currencies, version FROM pm.payment_route ORDER BY id")
    psp = {"IPPS_TRANSFER", "QP_TRANSFER"}
    assert len(routes) == len(DEFAULT_ROUTES) - 1 + 1  # without 0019's REFUND route, with the one made here
    for route in routes:
        expected = ["THB"] if route["channel"] in psp else ["EUR", "THB", "USD"]
        assert (route["channel"], route["currencies"], route["version"]) == (route["channel"], expected, 1)
    assert await connection.fetchval("SELECT generation FROM pm.rule_generation") == generation + 1
    # No default from now on: a rule names its currency, a route the ones it serves.
    with pytest.raises(asyncpg.NotNullViolationError):
        await connection.execute(
            "INSERT INTO pm.limit_rule (operation_type, period, max_amount_minor) VALUES (NULL, 'daily', 1)"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(
            "INSERT INTO pm.limit_rule (operation_type, period, max_amount_minor, currency)"
            " VALUES (NULL, 'daily', 1, 'baht')"
        )
    insert = (
        "INSERT INTO pm.payment_route (operation_type, min_amount_minor, max_amount_minor, channel, priority,"
        " currencies) VALUES ('P2P_TRANSFER', 1, 100, 'INTERNAL_P2P', $1, $2)"
    )
    with pytest.raises(asyncpg.NotNullViolationError):
        await connection.execute(insert, 1, None)
    refusals = ([], ["thb"], ["THB", None], ["THB,USD"], [["THB"], ["USD"]], ["THB", "THB"], ["THB"] * 17)
    for priority, refused in enumerate(refusals, start=2):
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, priority, refused)
    await connection.execute(insert, 20, ["THB", "USD"])


async def test_0019_lets_merchant_keys_refund_and_holds_refunds_to_their_original(
    empty_database: str, tmp_path: Path, connect
) -> None:
    await _migrated_to(empty_database, tmp_path, 18)
    connection = await connect(empty_database)
    key = ("INSERT INTO pm.api_key (key_id, name, secret, scopes, merchant_id, operations)"
           " VALUES ($1, $1, 's', ARRAY['intents:write'], 7, $2)")  # fmt: skip
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(key, "pmk_before0019", ["MINIAPP_CHARGE", "REFUND"])
    await migrate(empty_database)
    await connection.execute(key, "pmk_after0019", ["MINIAPP_CHARGE", "REFUND"])
    with pytest.raises(asyncpg.CheckViolationError):  # still nothing else
        await connection.execute(key, "pmk_p2p0019", ["MINIAPP_CHARGE", "P2P_TRANSFER"])
    route = await connection.fetchrow(
        "SELECT channel, currencies FROM pm.payment_route WHERE operation_type = 'REFUND'"
    )
    assert (route["channel"], route["currencies"]) == ("REFUND", ["EUR", "THB", "USD"])
    insert = ("INSERT INTO pm.intent (id, state, version, operation_type, amount_minor, currency, sender_id,"
              " recipient_id, api_key_id, idempotency_key, refund_of, refunded_minor)"
              " VALUES ($1::uuid, 'SETTLED', 6, $2, 100, 'THB', 1, 2, 'k', $1::uuid::text, $3, $4)")  # fmt: skip
    original = uuid.uuid4()
    await connection.execute(insert, original, "P2P_TRANSFER", None, 100)
    p2p = "P2P_TRANSFER"
    refused = [(p2p, None, 101), ("REFUND", None, 0), (p2p, original, 0), (p2p, None, -1)]
    for operation, refund_of, refunded_minor in refused:
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, uuid.uuid4(), operation, refund_of, refunded_minor)
    await connection.execute(insert, uuid.uuid4(), "REFUND", original, 0)


async def test_0022_puts_fee_rules_and_their_versions_in_thb(empty_database: str, tmp_path: Path, connect) -> None:
    await _migrated_to(empty_database, tmp_path, 21)
    connection = await connect(empty_database)
    rule_id = await connection.fetchval(
        "INSERT INTO pm.fee_rule (version, name, condition, amount, kind, priority, min_fee_minor)"
        " VALUES (1, 'floor', 'true', 'amount / 100', 'PRE', 10, 500) RETURNING id"
    )
    await connection.execute(
        'INSERT INTO pm.fee_rule_version (rule_id, version, definition) VALUES ($1, 1, \'{"name": "floor"}\')',
        rule_id,
    )
    generation = await connection.fetchval("SELECT generation FROM pm.rule_generation")
    await _migrated_to(empty_database, tmp_path, 22)
    stored = await fee_rules.get_rule(connection, rule_id)
    assert stored is not None and (stored.rule.currency, stored.rule.min_fee_minor) == ("THB", 500)
    [version] = await fee_rules.rule_versions(connection, rule_id)
    assert (version["version"], version["currency"], version["definition"]) == (1, "THB", {"name": "floor"})
    assert await connection.fetchval("SELECT generation FROM pm.rule_generation") == generation + 1
    # No default from now on: a rule names its currency, and only as an ISO code.
    insert = (
        "INSERT INTO pm.fee_rule (version, name, condition, amount, kind, priority, currency)"
        " VALUES (1, 'r', 'true', '1', 'PRE', 1, $1)"
    )
    with pytest.raises(asyncpg.NotNullViolationError):
        await connection.execute(insert, None)
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute(insert, "baht")
    with pytest.raises(asyncpg.NotNullViolationError):
        await connection.execute(
            "INSERT INTO pm.fee_rule_version (rule_id, version, definition) VALUES ($1, 2, '{}')", rule_id
        )
