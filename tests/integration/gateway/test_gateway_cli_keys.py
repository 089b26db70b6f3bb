"""`pm keys create/rotate/revoke/list`, run as the installed command against the real database: the
secret is printed once, a created key signs requests the gateway accepts and carries the operation types
it was made with (checked, and never beyond a merchant's own), a rotated key keeps its previous secret
for the grace asked for (`--grace`, default 24 h, 0: none), a revoked key is refused, and mistakes end
with a one-line error and exit code 1 or 2 with nothing changed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pm.config.constants import API_KEY_CACHE_TTL_S, API_KEY_RECHECK_S
from pm.store import keys
from tests.support.gateway import Gateway, Key, new_user

PM = str(Path(sys.executable).parent / "pm")


def pm(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    environment["PM_DATABASE_URL"] = database_url
    return subprocess.run([PM, "keys", *arguments], env=environment, capture_output=True, text=True, timeout=60)


async def run_pm(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(pm, database_url, *arguments)


async def balance_status(gateway: Gateway, key: Key) -> int:
    response = await gateway.send("GET", "/api/pm/balance?currency=THB", key=key, user_id=new_user())
    return response.status


async def test_create_rotate_revoke_list(gateway: Gateway, postgres_url: str) -> None:
    created = await run_pm(
        postgres_url, "create", "auth-center", "--scopes", "intents:write,balance:read",
        "--operations", "P2P_TRANSFER,QP_TOPUP", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["name"] == "auth-center" and issued["scopes"] == ["balance:read", "intents:write"]
    assert issued["operations"] == ["P2P_TRANSFER", "QP_TOPUP"]
    first = Key(issued["key_id"], issued["secret"])
    assert await balance_status(gateway, first) == 200

    rotated = await run_pm(postgres_url, "rotate", first.key_id, "--json")
    assert rotated.returncode == 0, rotated.stderr
    second = Key(first.key_id, json.loads(rotated.stdout)["secret"])
    assert second.secret != first.secret
    stored = await keys.lookup_key(gateway.pool, first.key_id)
    assert stored is not None and stored.active_secrets == (second.secret, first.secret)
    await asyncio.sleep(API_KEY_RECHECK_S)
    assert (await balance_status(gateway, first), await balance_status(gateway, second)) == (200, 200)

    listed = await run_pm(postgres_url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [entry for entry in json.loads(listed.stdout) if entry["key_id"] == first.key_id]
    assert "secret" not in entry and first.secret not in listed.stdout and entry["revoked_at"] is None
    assert entry["operations"] == ["P2P_TRANSFER", "QP_TOPUP"]
    plain_list = await run_pm(postgres_url, "list")
    assert first.key_id in plain_list.stdout and second.secret not in plain_list.stdout
    [line] = [line for line in plain_list.stdout.splitlines() if line.startswith(first.key_id)]
    assert "operations=P2P_TRANSFER,QP_TOPUP" in line

    revoked = await run_pm(postgres_url, "revoke", first.key_id)
    assert revoked.returncode == 0, revoked.stderr
    await asyncio.sleep(API_KEY_CACHE_TTL_S)
    assert await balance_status(gateway, second) == 401
    again = await run_pm(postgres_url, "revoke", first.key_id)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    rotate_revoked = await run_pm(postgres_url, "rotate", first.key_id)
    assert rotate_revoked.returncode == 1


async def test_plain_create_prints_the_secret_once_and_refuses_unknown_scopes(
    gateway: Gateway, postgres_url: str
) -> None:
    created = await run_pm(postgres_url, "create", "mini-app", "--scopes", "intents:write", "--merchant-id", "77")
    assert created.returncode == 0, created.stderr
    lines = dict(line.split(": ", 1) for line in created.stdout.strip().splitlines())
    assert set(lines) == {"key_id", "secret"}
    assert "not shown again" in created.stderr
    stored = await keys.lookup_key(gateway.pool, lines["key_id"])
    assert stored is not None and stored.merchant_id == 77 and stored.secret == lines["secret"]
    # A merchant's key without --operations gets its merchant's two operations, the only ones it may have.
    assert stored.operations == keys.MERCHANT_OPERATIONS

    unknown = await run_pm(postgres_url, "create", "x", "--scopes", "intents:write,money:print")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "money:print" in unknown.stderr


async def test_operations_are_required_checked_and_never_beyond_a_merchant(gateway: Gateway, postgres_url: str) -> None:
    async def key_count() -> int:
        return await gateway.pool.fetchval("SELECT count(*) FROM pm.api_key")

    before = await key_count()
    refusals = {
        "no list for a writer": ("--scopes", "intents:write"),
        "unknown type": ("--scopes", "intents:write", "--operations", "P2P_TRANSFER,PRINT_MONEY"),
        "merchant beyond its own": ("--scopes", "intents:write", "--merchant-id", "5", "--operations", "P2P_TRANSFER"),
        "miniapp without a merchant": ("--scopes", "intents:write", "--operations", "MINIAPP_CHARGE"),
        "adjustment without admin": ("--scopes", "intents:write", "--operations", "ADMIN_ADJUSTMENT"),
        "types without a write scope": ("--scopes", "balance:read", "--operations", "P2P_TRANSFER"),
    }
    for case, arguments in refusals.items():
        refused = await run_pm(postgres_url, "create", "x", *arguments)
        assert refused.returncode == 2, (case, refused.stderr)
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("pm: "), (case, refused.stderr)
    assert await key_count() == before  # nothing was made

    reader = await run_pm(postgres_url, "create", "reader", "--scopes", "balance:read", "--json")
    assert reader.returncode == 0 and json.loads(reader.stdout)["operations"] == []
    none = await run_pm(postgres_url, "create", "writer", "--scopes", "intents:write", "--operations", "none", "--json")
    assert none.returncode == 0 and json.loads(none.stdout)["operations"] == []


async def test_rotate_grace_sets_when_the_previous_secret_stops(gateway: Gateway, postgres_url: str) -> None:
    created = await run_pm(postgres_url, "create", "rotating", "--scopes", "balance:read", "--json")
    first = Key(json.loads(created.stdout)["key_id"], json.loads(created.stdout)["secret"])

    hour = await run_pm(postgres_url, "rotate", first.key_id, "--grace", "1h", "--json")
    assert hour.returncode == 0, hour.stderr
    issued = json.loads(hour.stdout)
    expires_at = datetime.fromisoformat(issued["previous_secret_expires_at"])
    assert abs((expires_at - datetime.now(UTC)).total_seconds() - 3600) < 60
    stored = await keys.lookup_key(gateway.pool, first.key_id)
    assert stored is not None and stored.active_secrets == (issued["secret"], first.secret)
    plain = await run_pm(postgres_url, "rotate", first.key_id)  # the default: 24 h
    assert plain.returncode == 0 and "previous secret works until" in plain.stderr
    stored = await keys.lookup_key(gateway.pool, first.key_id)
    assert stored is not None and stored.previous_secret_expires_at is not None
    assert abs((stored.previous_secret_expires_at - datetime.now(UTC)).total_seconds() - 86_400) < 60

    at_once = await run_pm(postgres_url, "rotate", first.key_id, "--grace", "0", "--json")
    assert at_once.returncode == 0, at_once.stderr
    third = json.loads(at_once.stdout)
    assert third["previous_secret_expires_at"] is None
    stored = await keys.lookup_key(gateway.pool, first.key_id)
    assert stored is not None and stored.active_secrets == (third["secret"],)


async def test_rotate_refuses_a_bad_grace_and_changes_nothing(gateway: Gateway, postgres_url: str) -> None:
    created = await run_pm(postgres_url, "create", "careful", "--scopes", "balance:read", "--json")
    key_id = json.loads(created.stdout)["key_id"]
    before = await keys.lookup_key(gateway.pool, key_id)
    for grace in ("90", "1w", "-5m", "31d", "1.5h", "soon", ""):
        refused = await run_pm(postgres_url, "rotate", key_id, f"--grace={grace}")
        assert refused.returncode == 2, (grace, refused.stderr)
        assert refused.stderr.count("\n") == 1 and "grace" in refused.stderr, (grace, refused.stderr)
        assert refused.stdout == ""
    assert await keys.lookup_key(gateway.pool, key_id) == before
