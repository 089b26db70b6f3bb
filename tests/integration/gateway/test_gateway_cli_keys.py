"""`pm keys create/rotate/revoke/list`, run as the installed command against the real database: the
secret is printed once, a created key signs requests the gateway accepts, a rotated key keeps its
previous secret, a revoked key is refused, and mistakes end with a one-line error and exit code 1 or 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from gateway_support import Gateway, Key, new_user

from pm import keys
from pm.constants import API_KEY_CACHE_TTL_S, API_KEY_RECHECK_S

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
    created = await run_pm(postgres_url, "create", "auth-center", "--scopes", "intents:write,balance:read", "--json")
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["name"] == "auth-center" and issued["scopes"] == ["balance:read", "intents:write"]
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
    plain_list = await run_pm(postgres_url, "list")
    assert first.key_id in plain_list.stdout and second.secret not in plain_list.stdout

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

    unknown = await run_pm(postgres_url, "create", "x", "--scopes", "intents:write,money:print")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "money:print" in unknown.stderr
