"""`pm up`: the whole fleet on this machine, with a demo ready to try.

Servers (embedded unless configured) -> migrations -> consumer groups -> demo API keys ->
the Procfile under honcho -> the gateway answers -> two demo users funded through the pipeline
(ADMIN_ADJUSTMENT, replay-safe) -> print how to use it -> run until Ctrl-C / SIGTERM, then stop
honcho (which stops every process) and the servers this command started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from pm.client import PMClient
from pm.config.settings import Settings
from pm.config.topology import load_topology
from pm.dev.fleet import PROCFILE
from pm.psp import secrets as psp_secrets
from pm.redis import streams
from pm.redis.wire import redis_from_url
from pm.store import keys

DEMO_USERS = (1001, 1002)
DEMO_FUNDING_MINOR = 1_000_000  # 10,000.00 THB each
DEMO_OPERATOR_ID = 1
DEMO_KEYS_FILE = "demo-keys.json"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def demo_keys_path(settings: Settings) -> Path:
    return settings.data_dir / DEMO_KEYS_FILE


async def ensure_demo_keys(database_url: str, settings: Settings) -> dict[str, dict[str, str]]:
    """An app key and an admin key for the demo, kept in the data dir; remade if revoked or missing."""
    path = demo_keys_path(settings)
    stored: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    # (scopes, operation types): the app key moves users' money as the Auth Center would; the admin key
    # only funds users (ADMIN_ADJUSTMENT) and edits rules.
    wanted = {
        "app": ("intents:write,intents:read,balance:read", "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP,REFUND"),
        "admin": ("admin", "ADMIN_ADJUSTMENT"),
    }
    connection = await asyncpg.connect(database_url)
    try:
        for role, (scopes, operations) in wanted.items():
            known = stored.get(role)
            key = await keys.lookup_key(connection, known["key_id"]) if known else None
            if key is None or key.revoked_at is not None:
                created, secret = await keys.create_key(
                    connection, name=f"demo-{role}", scopes=scopes, operations=operations
                )
                stored[role] = {"key_id": created.key_id, "secret": secret}
    finally:
        await connection.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2))
    path.chmod(0o600)
    return stored


async def _wait_ready(base_url: str, honcho: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if honcho.returncode is not None:
                raise RuntimeError("the fleet stopped while starting; see its output above")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"the gateway did not answer {base_url}/readyz within {READY_TIMEOUT_S:.0f} s")


async def _fund_demo_users(base_url: str, admin: dict[str, str]) -> None:
    async with PMClient(base_url, admin["key_id"], admin["secret"]) as client:
        for user_id in DEMO_USERS:
            # A fixed Idempotency-Key: running `pm up` again replays the answer, it never funds twice.
            await client.create_intent(
                operation_type="ADMIN_ADJUSTMENT",
                amount_minor=DEMO_FUNDING_MINOR,
                currency="THB",
                recipient_id=user_id,
                user_id=DEMO_OPERATOR_ID,
                idempotency_key=f"demo-funding-{user_id}",
                wait_s=10,
            )


def _print_welcome(base_url: str, demo_keys: dict[str, dict[str, str]], settings: Settings) -> None:
    app = demo_keys["app"]
    print(
        f"""
OneWallet PM is running: {base_url}  (Ctrl-C stops it)
  demo users {DEMO_USERS[0]} and {DEMO_USERS[1]} hold {DEMO_FUNDING_MINOR / 100:,.2f} THB each (first run)
  demo app key {app["key_id"]} (secret in {demo_keys_path(settings)})

Try, in another terminal:
  .venv/bin/pm send p2p --from {DEMO_USERS[0]} --to {DEMO_USERS[1]} --amount 150.00
  .venv/bin/pm balance --user {DEMO_USERS[1]}
  .venv/bin/pm ledger check --allow-pending-transit
  curl -s {base_url}/metrics | grep pm_http
""",
        flush=True,
    )


def simulator_secrets_if_local(settings: Settings) -> dict[str, str]:
    """The PSP simulator's public secrets for every one left unset, when the fleet's PSPs are the local
    simulator the Procfile runs; nothing otherwise (real PSPs need real secrets: pm/psp/secrets.py)."""
    urls = (settings.psp_ipps_url, settings.psp_qp_url)
    if not all(psp_secrets.is_local_simulator(url, settings) for url in urls):
        return {}
    configured = {
        "PM_PSP_API_KEY": settings.psp_api_key,
        "PM_PSP_IPPS_CALLBACK_SECRET": settings.psp_ipps_callback_secret,
        "PM_PSP_QP_CALLBACK_SECRET": settings.psp_qp_callback_secret,
    }
    return {name: value for name, value in psp_secrets.SIMULATOR_ENVIRONMENT.items() if configured[name] is None}


async def run_up(settings: Settings, database_url: str, redis_url: str, ledger_url: str, concurrency: list[str]) -> int:
    topology = load_topology(settings.streams_file)
    client = redis_from_url(redis_url)
    try:
        await streams.ensure_groups(client, topology)
    finally:
        await client.aclose()
    demo_keys = await ensure_demo_keys(database_url, settings)

    bin_dir = str(Path(sys.executable).parent)
    environment: dict[str, Any] = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PM_DATABASE_URL": database_url,
        "PM_REDIS_URL": redis_url,
        "PM_LEDGER_URL": ledger_url,
        "PM_STREAMS_FILE": str(settings.streams_file),
        **simulator_secrets_if_local(settings),
    }
    arguments = [f"{bin_dir}/honcho", "start", "-f", str(PROCFILE), "-d", str(PROCFILE.parent)]
    for spec in concurrency:
        arguments += ["-c", spec]
    honcho = await asyncio.create_subprocess_exec(*arguments, env=environment, start_new_session=True)
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    try:
        await _wait_ready(base_url, honcho)
        await _fund_demo_users(base_url, demo_keys["admin"])
        _print_welcome(base_url, demo_keys, settings)
        return await honcho.wait()  # runs until the fleet stops or this command is interrupted
    finally:
        if honcho.returncode is None:
            honcho.send_signal(signal.SIGTERM)  # honcho passes it on to every process
            try:
                await asyncio.wait_for(honcho.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                os.killpg(honcho.pid, signal.SIGKILL)
                await honcho.wait()
