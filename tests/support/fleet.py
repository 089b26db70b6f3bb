"""The fleet as separate processes (the Procfile's commands) on real servers, for one test module:
a fresh migrated database (also the `postgres` ledger), streams of its own in the session's Valkey,
a gateway on a free port, and signed clients for an app key and an admin key."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from consumers import outbox_feed
from ledger import accounts, open_ledger
from ledger.check import CheckReport, run_check
from pm.cli import reconciliation
from pm.client import PMClient
from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.config.topology import Topology, parse_topology, renamed_document
from pm.dev.fleet import Fleet, read_procfile
from pm.psp.secrets import SIMULATOR_ENVIRONMENT
from pm.redis.wire import redis_from_url
from pm.store import keys
from pm.store.migrate import migrate
from tests.support.ports import free_port

READY_TIMEOUT_S = 60.0
FINISHED = ("SETTLED", "REJECTED", "FAILED")
APP_SCOPES = "intents:write,intents:read,balance:read,consent:write"
# What the e2e keys may create (every key carries its list): the app's user operations, a merchant's own two.
APP_OPERATIONS = "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP"
MERCHANT_OPERATIONS = "MINIAPP_CHARGE,MINIAPP_CREDIT"


def psp_sim_environment(sim_port: int, delay_ms: int, hold_timeout_s: int, outcome_deadline_s: int) -> dict[str, str]:
    """The fleet's settings for a PSP simulator on `sim_port` (a Procfile `psp-sim` process) and its timings:
    its public secrets, given explicitly (they have no default), the submit deadline a second before the
    outcome deadline with PSP calls bounded by a second, and status queries allowed twice a second."""
    return {
        **SIMULATOR_ENVIRONMENT,
        "PM_PSP_SUBMIT_DEADLINE_S": str(outcome_deadline_s - 1),
        "PM_PSP_REQUEST_TIMEOUT_S": "1",
        "PM_PSP_STATUS_QUERY_INTERVAL_S": "0.5",
        "PM_PSP_SIM_PORT": str(sim_port),
        "PM_PSP_SIM_DELAY_MS": str(delay_ms),
        "PM_PSP_IPPS_URL": f"http://127.0.0.1:{sim_port}/ipps",
        "PM_PSP_QP_URL": f"http://127.0.0.1:{sim_port}/qp",
        "PM_PUBLIC_URL": "http://127.0.0.1:{http_port}",
        "PM_PSP_HOLD_TIMEOUT_S": str(hold_timeout_s),
        "PM_PSP_OUTCOME_DEADLINE_S": str(outcome_deadline_s),
    }


def write_streams_file(directory: Path, **stage_overrides: Any) -> tuple[Path, Topology]:
    document = renamed_document(f"e{uuid.uuid4().hex[:10]}:", **stage_overrides)
    path = directory / "streams.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, parse_topology(document)


@dataclass
class RunningFleet:
    fleet: Fleet
    database_url: str
    redis_url: str
    base_url: str
    topology: Topology
    app: PMClient
    admin: PMClient
    pool: asyncpg.Pool
    metrics_ports: dict[str, list[int]]

    async def metrics(self, process_type: str) -> str:
        """The Prometheus exposition of the first process of a type."""
        port = self.metrics_ports[process_type][0]
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def fund(self, user_id: int, amount_minor: int, currency: str = "THB") -> dict[str, Any]:
        intent = await self.admin.create_intent(
            operation_type="ADMIN_ADJUSTMENT", amount_minor=amount_minor, currency=currency,
            recipient_id=user_id, user_id=1, wait_s=10,
        )  # fmt: skip
        assert intent["state"] == "SETTLED", intent
        return intent

    async def wait_finished(self, ids: list[str], timeout_s: float = 120.0) -> dict[str, asyncpg.Record]:
        deadline = time.monotonic() + timeout_s
        uuids = [uuid.UUID(i) for i in ids]
        while True:
            rows = await self.pool.fetch(
                "SELECT id, state, error_code, version FROM pm.intent"
                " WHERE id = ANY($1::uuid[]) AND state = ANY($2::text[]) AND finished",
                uuids,
                list(FINISHED),
            )
            if len(rows) == len(set(uuids)) and len(await outbox_feed.delivered(self.pool, uuids)) == len(set(uuids)):
                return {str(row["id"]): row for row in rows}
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(set(uuids)) - len(rows)} intents not finished after {timeout_s} s")
            await asyncio.sleep(0.2)

    async def terminal_transitions(self, ids: list[str]) -> dict[str, int]:
        """How many final transitions each intent made (exactly one, for every intent that ended)."""
        rows = await self.pool.fetch(
            "SELECT intent_id::text AS intent_id, count(*) AS n FROM pm.intent_event"
            " WHERE intent_id = ANY($1::uuid[]) AND state = ANY($2::text[]) GROUP BY intent_id",
            [uuid.UUID(i) for i in ids],
            list(FINISHED),
        )
        return {row["intent_id"]: row["n"] for row in rows}

    async def callbacks_recorded(self, amount_of: dict[str, int]) -> dict[int, int]:
        """PSP callback events recorded (pm.psp_event), per simulator behaviour (the amount's last two
        digits) of the intents `amount_of` maps to their amounts."""
        rows = await self.pool.fetch(
            "SELECT intent_id::text AS intent_id, count(*) AS n FROM pm.psp_event"
            " WHERE intent_id = ANY($1::uuid[]) GROUP BY intent_id",
            [uuid.UUID(i) for i in amount_of],
        )
        return {amount_of[row["intent_id"]] % 100: row["n"] for row in rows}

    async def balance(self, user_id: int, currency: str = "THB") -> tuple[int, int]:
        async with open_ledger(self.database_url) as ledger:
            found = await ledger.lookup_accounts([accounts.user(user_id, currency).id])
        if not found:
            return 0, 0
        return found[0].credits_posted - found[0].debits_posted, found[0].debits_pending

    async def fees_posted(self) -> int:
        """The net of what the fees account has been credited (0 before its first fee)."""
        async with open_ledger(self.database_url) as ledger:
            found = await ledger.lookup_accounts([accounts.fees("THB").id])
        return found[0].credits_posted - found[0].debits_posted if found else 0

    async def add_fee_rules(self, name: str, operation_type: str, channel: str, amounts_minor: dict[str, int]) -> None:
        """A flat fee rule per kind (`amounts_minor`: kind -> amount, e.g. {"PRE": 25, "POST": 100}), named
        "{name} {kind}", then a wait until every fees process has re-read the rules."""
        for kind, amount_minor in amounts_minor.items():
            rule = {
                "name": f"{name} {kind}", "currency": "THB", "operation_type": operation_type, "channel": channel,
                "condition": "true", "amount": str(amount_minor), "kind": kind, "priority": 10,
            }  # fmt: skip
            await self.admin.request("POST", "/admin/fee-rules", body=rule)
        await asyncio.sleep(2 * RULES_POLL_INTERVAL_S)

    async def check(self) -> CheckReport:
        async with open_ledger(self.database_url) as ledger:
            return await run_check(ledger)

    async def reconcile(self) -> reconciliation.ReconcileReport:
        """`pm reconcile`'s check of every intent and user's history against the ledger (in-process)."""
        async with open_ledger(self.database_url) as ledger:
            return await reconciliation.reconcile(self.pool, ledger)

    async def pending_entries(self, settle_s: float = 5.0) -> int:
        """Entries delivered and not acknowledged in any stage's group, once that is 0 or `settle_s` has
        passed: a stage acknowledges just after its commit, which the outbox feed (what `wait_finished`
        waits for) may beat by a moment."""

        client = redis_from_url(self.redis_url)
        deadline = time.monotonic() + settle_s
        try:
            while True:
                total = 0
                for stage in self.topology.stages.values():
                    total += (await client.xpending(stage.stream, stage.group))["pending"]
                if total == 0 or time.monotonic() > deadline:
                    return total
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()


async def _wait_healthy(base_url: str, fleet: Fleet) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            if not fleet.alive("gateway"):
                raise AssertionError(f"the gateway died:\n{fleet.logs('gateway')[-4000:]}")
            await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway was not ready within {READY_TIMEOUT_S} s:\n{fleet.logs('gateway')[-4000:]}")


async def _wait_consuming(redis_url: str, topology: Topology, wanted: dict[str, int], fleet: Fleet) -> None:
    """Until every stage process started reads its group: a cold start (no bytecode cached yet, a busy
    machine) must not eat into a test's own waits. `all` and the poller are no stage of their own."""
    import redis.asyncio as aioredis

    stages: dict[str, int] = {}
    process_of: dict[str, str] = {}
    for process_type, count in wanted.items():  # a comma-separated type runs several stages
        for name in process_type.split(","):
            if name in topology.stages and count:
                stages[name] = stages.get(name, 0) + count
                process_of[name] = process_type
    client = redis_from_url(redis_url)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            missing = {}
            for name, count in stages.items():
                stage = topology.stage(name)
                try:
                    consumers = await client.xinfo_consumers(stage.stream, stage.group)
                except aioredis.ResponseError:  # the group is not there yet
                    consumers = []
                if len(consumers) < count:
                    missing[name] = count - len(consumers)
            if not missing:
                return
            dead = sorted({process_of[name] for name in missing if not fleet.alive(process_of[name])})
            if dead or time.monotonic() > deadline:
                logs = "\n".join(fleet.logs(name)[-2000:] for name in dead or {process_of[n] for n in missing})
                raise AssertionError(f"stages not consuming within {READY_TIMEOUT_S} s: {missing}\n{logs}")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def running_fleet(
    fresh_database: Any,
    redis_url: str,
    counts: dict[str, int] | None = None,
    extra_environment: dict[str, str] | None = None,
    **stage_overrides: Any,
) -> AsyncIterator[RunningFleet]:
    """The Procfile's processes on a fresh database; `counts` adds or scales types (e.g. {"psp-sim": 1}),
    `extra_environment` adds PM_* variables (a value may name "{http_port}": the gateway's port)."""
    database_url = await fresh_database()
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    app_key, app_secret = await keys.create_key(pool, name="e2e-app", scopes=APP_SCOPES, operations=APP_OPERATIONS)
    admin_key, admin_secret = await keys.create_key(
        pool, name="e2e-admin", scopes="admin,intents:read", operations="ADMIN_ADJUSTMENT"
    )
    with tempfile.TemporaryDirectory(prefix="pm-e2e-") as directory:
        streams_file, topology = write_streams_file(Path(directory), **stage_overrides)
        port = free_port()
        environment = {
            "PM_DATABASE_URL": database_url,
            "PM_REDIS_URL": redis_url,
            "PM_LEDGER_URL": database_url,
            "PM_STREAMS_FILE": str(streams_file),
            "PM_HTTP_PORT": str(port),
            "PM_LOG_LEVEL": "WARNING",
            **{name: value.replace("{http_port}", str(port)) for name, value in (extra_environment or {}).items()},
        }
        fleet = Fleet(environment=environment, log_dir=Path(directory))
        wanted = {"gateway": 1, "validation": 1, "fees": 1, "limits": 1, "dispatch": 1, "settlement": 1, "history": 1,
                  "poller": 1, "outbox": 1, **(counts or {})}  # fmt: skip
        metrics_ports: dict[str, list[int]] = {}
        procfile = read_procfile()
        try:
            for process_type, count in wanted.items():
                if process_type == "gateway":
                    fleet.start(process_type, count)
                    continue
                ports = [free_port() for _ in range(count)]
                # A type that is no Procfile line (a comma-separated group of stages) runs as `pm run TYPE`.
                command = None if process_type in procfile else f"pm run {process_type}"
                for metrics_port in ports:  # each stage process serves /metrics on its $PORT
                    fleet.start(process_type, 1, port_base=metrics_port, command=command)
                metrics_ports[process_type] = ports
            base_url = f"http://127.0.0.1:{port}"
            await _wait_healthy(base_url, fleet)
            await _wait_consuming(redis_url, topology, wanted, fleet)
            async with (
                PMClient(base_url, app_key.key_id, app_secret) as app,
                PMClient(base_url, admin_key.key_id, admin_secret) as admin,
            ):
                yield RunningFleet(fleet, database_url, redis_url, base_url, topology, app, admin, pool, metrics_ports)
        finally:
            await asyncio.to_thread(fleet.stop)
            await pool.close()
