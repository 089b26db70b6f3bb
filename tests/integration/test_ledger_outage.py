"""Proves that an unreachable ledger fails nothing (issue 12, item 3). The ledger goes away for
PM_TEST_LEDGER_OUTAGE_S (30 s by default) while intents come in through the real gateway, in one of
three ways:
- `postgres-stopped`: the `postgres` ledger runs on a PostgreSQL server of its own, which is stopped;
- `postgres-cut`: the same server behind a loopback TCP relay (tests/support/tcp_proxy.py), which is cut:
  every ledger connection reset, new ones refused;
- `tigerbeetle-cut`: the TigerBeetle cluster at PM_TIGERBEETLE_ADDRESSES behind such relays (one per
  replica), cut the same way (skipped when no cluster is configured: the test cannot stop a server it
  did not start). The client then waits forever; `request_timeout_ms` makes each request an outage.
 Meanwhile `/readyz` answers 503 naming the ledger (and only it), a
balance read answers 503 UNAVAILABLE, new intents are still taken, no intent is FAILED or REJECTED and
nothing reaches a dead-letter stream, although the outage lasts many times `max_deliveries` x
`claim_idle_ms`; once the server is back, every intent settles exactly once with exact balances, nothing
pending and a clean ledger."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pm.config.settings import Settings
from pm.dev.embedded import create_database, running_postgres, start_postgres, stop_postgres
from pm.domain.intent import State
from tests.support.gateway_pipeline import GatewayPipeline, gateway_on_pipeline
from tests.support.outage import assert_balances_after, assert_converged, outages_counted, post_until_accepted
from tests.support.pipeline import isolated_topology
from tests.support.tcp_proxy import TcpProxy

USERS = 10  # senders; as many recipients
FUNDS_MINOR = 1_000_000
INTENTS_BEFORE, INTENTS_DURING = 50, 150
CLAIM_IDLE_MS, MAX_DELIVERIES = 1_000, 2
AUTH_CENTER_SCOPES = "intents:write,intents:read,balance:read"
TIGERBEETLE_REQUEST_TIMEOUT_MS = 500


async def _readyz(world: GatewayPipeline) -> tuple[int, dict]:
    response = await world.client.get("/readyz")
    return response.status, await response.json()


async def _send(world: GatewayPipeline, key, plan: list[tuple[int, int, int]], answers) -> list[uuid.UUID]:
    deadline_s = time.monotonic() + 30
    ids = []
    for sender, recipient, amount in plan:
        body = {"operation_type": "P2P_TRANSFER", "amount_minor": amount, "currency": "THB", "recipient_id": recipient}
        ids.append(await post_until_accepted(world, key, body, sender, answers, deadline_s))
    return ids


async def _refused_count(world: GatewayPipeline, ids: list[uuid.UUID]) -> int:
    return await world.pipeline.context.pool.fetchval(
        "SELECT count(*) FROM pm.intent WHERE id = ANY($1::uuid[]) AND state IN ('FAILED', 'REJECTED')", ids
    )


@dataclass
class Outage:
    """A ledger the test can take away and bring back."""

    url: str
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def _postgres_stopped(tmp_path: Path) -> AsyncIterator[Outage]:
    ledger_data = tmp_path / "ledger-postgres"
    with running_postgres(ledger_data) as server_url:

        async def start() -> None:
            assert await asyncio.to_thread(start_postgres, ledger_data) == server_url

        url = await create_database(server_url, "ledger", exist_ok=False)
        yield Outage(url, functools.partial(asyncio.to_thread, stop_postgres, ledger_data), start)


@contextlib.asynccontextmanager
async def _cut(proxies: list[TcpProxy], url_of: Callable[[list[int]], str]) -> AsyncIterator[Outage]:
    ports = [await proxy.start() for proxy in proxies]
    try:
        yield Outage(
            url_of(ports),
            lambda: asyncio.gather(*(proxy.cut() for proxy in proxies)),
            lambda: asyncio.gather(*(proxy.restore() for proxy in proxies)),
        )
        assert all(proxy.connections for proxy in proxies), "the ledger was not reached through the relay"
    finally:
        for proxy in proxies:
            await proxy.close()


@contextlib.asynccontextmanager
async def _postgres_cut(tmp_path: Path) -> AsyncIterator[Outage]:
    with running_postgres(tmp_path / "ledger-postgres") as server_url:
        await create_database(server_url, "ledger", exist_ok=False)
        query = parse_qs(urlsplit(server_url).query)
        socket_path = f"{query['host'][0]}/.s.PGSQL.{query['port'][0]}"
        proxy = TcpProxy(functools.partial(asyncio.open_unix_connection, socket_path))
        async with _cut([proxy], lambda ports: f"postgresql://postgres@127.0.0.1:{ports[0]}/ledger") as outage:
            yield outage


@contextlib.asynccontextmanager
async def _tigerbeetle_cut(tmp_path: Path) -> AsyncIterator[Outage]:
    addresses = os.environ.get("PM_TIGERBEETLE_ADDRESSES", "").strip()
    if not addresses:
        pytest.skip("PM_TIGERBEETLE_ADDRESSES is not set: no TigerBeetle cluster to cut off")
    cluster_id = int(os.environ.get("PM_TIGERBEETLE_CLUSTER_ID", "0"))
    proxies = []
    for address in addresses.split(","):
        host, _, port = address.strip().rpartition(":")
        proxies.append(TcpProxy(functools.partial(asyncio.open_connection, host or "127.0.0.1", int(port))))

    def url_of(ports: list[int]) -> str:
        relayed = ",".join(f"127.0.0.1:{port}" for port in ports)
        return f"tigerbeetle://{relayed}?cluster={cluster_id}&request_timeout_ms={TIGERBEETLE_REQUEST_TIMEOUT_MS}"

    async with _cut(proxies, url_of) as outage:
        yield outage


OUTAGES = {"postgres-stopped": _postgres_stopped, "postgres-cut": _postgres_cut, "tigerbeetle-cut": _tigerbeetle_cut}


@pytest.mark.parametrize("how", list(OUTAGES))
async def test_an_unreachable_ledger_fails_nothing_and_everything_settles_after(
    fresh_database, redis_url, tmp_path: Path, how: str
) -> None:
    outage_s = Settings().test_ledger_outage_s
    assert outage_s * 1000 > 4 * MAX_DELIVERIES * CLAIM_IDLE_MS, "the outage must outlast the delivery budget"
    async with OUTAGES[how](tmp_path) as outage:
        ledger_url = outage.url
        topology = isolated_topology(claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=MAX_DELIVERIES)
        async with gateway_on_pipeline(fresh_database, redis_url, topology, ledger_url) as world:
            pipeline = world.pipeline
            base = random.randrange(10**12, 10**14, 10**6)
            senders, recipients = list(range(base, base + USERS)), list(range(base + USERS, base + 2 * USERS))
            await pipeline.wait_finished([(await pipeline.fund(user, FUNDS_MINOR)).id for user in senders])
            key = await world.key(AUTH_CENTER_SCOPES, "P2P_TRANSFER")
            plan = [
                (random.choice(senders), random.choice(recipients), random.randint(100, 9_999))
                for _ in range(INTENTS_BEFORE + INTENTS_DURING)
            ]
            answers: collections.Counter[tuple[int, str]] = collections.Counter()
            outages_before = outages_counted("ledger")

            ids = await _send(world, key, plan[:INTENTS_BEFORE], answers)
            await outage.stop()
            stopped_s = time.monotonic()
            # New intents are taken while the ledger is away: they wait, pending, in the stages.
            ids += await _send(world, key, plan[INTENTS_BEFORE:], answers)
            assert answers == {(202, ""): len(plan)}, answers
            status, body = await _readyz(world)
            assert (status, body["down"]) == (503, ["ledger"]), body
            assert body["checks"]["database"] == body["checks"]["redis"] == "ok", body
            balance = await world.send("GET", "/api/pm/balance", key=key, user_id=senders[0])
            assert balance.status == 503 and (await balance.json())["error"]["code"] == "UNAVAILABLE"
            await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - stopped_s)))
            # The whole outage: nothing failed, nothing dead-lettered, the stages met the outage.
            assert await _refused_count(world, ids) == 0
            for stage in topology.stages.values():
                assert await pipeline.context.redis.xlen(stage.dead_letter_stream) == 0, stage.name
            assert outages_counted("ledger") > outages_before

            await outage.start()
            finished = await pipeline.wait_finished(ids, timeout_s=60)
            assert {intent.state for intent in finished.values()} == {State.SETTLED}
            assert (await _readyz(world))[0] == 200
            await assert_balances_after(pipeline.balance, plan, senders, recipients, FUNDS_MINOR)
            await assert_converged(world, ids)
