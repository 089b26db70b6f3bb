"""Proves that a Valkey Cluster losing a master for a while costs retries and nothing else. While P2P
intents go through the real gateway and stages on a cluster of three masters (no replicas), one master is
stopped (SIGSTOP) past the cluster's node timeout, until the other masters declare the cluster down and
answer CLUSTERDOWN for every key, and then resumed (SIGCONT), its data intact. The stopped master is one
that serves neither the streams nor the caller's read nonces, so those meet CLUSTERDOWN rather than a
timeout.

While the cluster is down, a signed read is answered 503 UNAVAILABLE with Retry-After (before redis-py's
cluster errors were taken for an outage, pm/redis/wire.py, it was a 500), and what a stage's publish
raises is an outage of "redis" (before, a failed delivery: "handler failed", counted toward dead-lettering).
Callers only ever see 202, 503 or 409; afterwards every intent settles exactly once with exact balances,
nothing pending, no dead letter and a clean ledger.

The cluster is this test's own (the directory's shared one must stay up for the other tests)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions
from redis.crc import key_slot

from consumers.runtime import dependency_down
from gateway.auth import nonce_key
from pm.dev.valkey_cluster import running_valkey_cluster
from pm.domain.intent import State
from tests.support.gateway_pipeline import GatewayPipeline, Key, gateway_on_pipeline
from tests.support.outage import assert_balances_after, assert_converged, post_until_accepted
from tests.support.pipeline import isolated_topology
from tests.support.ports import cluster_node_port

INTENTS = 300
CALLERS = 16
USERS = 10  # senders; as many recipients
FUNDS_MINOR = 10_000_000
STOP_AFTER_ACCEPTED = 60
NODE_TIMEOUT_S = 5.0  # pm/dev/valkey_cluster.py's cluster-node-timeout
CLUSTER_DOWN_WITHIN_S = 20.0  # after the stop: node timeout, then the failure report's gossip
RESUME_AFTER_DOWN_S = 2.0  # how long the cluster stays down once the other masters say so
PROBE_SOCKET_TIMEOUT_S = 1.0
AUTH_CENTER_SCOPES = "intents:write,intents:read,balance:read"


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[str]:
    ports = [cluster_node_port() for _ in range(3)]
    with running_valkey_cluster(tmp_path / "cluster", ports=ports) as url:
        yield url


def _ports(cluster_url: str) -> list[int]:
    return [int(node.rpartition(":")[2]) for node in cluster_url.removeprefix("redis+cluster://").split(",")]


def _master_of(ports: list[int], key: str) -> tuple[int, list[int]]:
    """The port of the master that serves `key`'s slot, and the other masters' ports."""
    slot = key_slot(key.encode())
    with contextlib.closing(redis.Redis(port=ports[0], socket_timeout=5)) as client:
        for start, end, (_, port, *_) in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(port), [p for p in ports if p != int(port)]
    raise AssertionError(f"no master serves slot {slot}")


def _pid_of(port: int) -> int:
    with contextlib.closing(redis.Redis(port=port, socket_timeout=5)) as client:
        return int(client.info("server")["process_id"])


async def _until_cluster_down(port: int) -> None:
    """Until the master on `port` (not the stopped one) says the cluster is down."""
    deadline_s = time.monotonic() + CLUSTER_DOWN_WITHIN_S
    client = redis.asyncio.Redis(port=port, socket_timeout=5)
    try:
        while time.monotonic() < deadline_s:
            try:
                await client.execute_command("CLUSTER", "COUNTKEYSINSLOT", 0)
                info = await client.execute_command("CLUSTER", "INFO")
                if b"cluster_state:fail" in info:
                    return
            except redis.exceptions.ResponseError as exc:
                if "CLUSTERDOWN" in str(exc):
                    return
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
    raise AssertionError(f"the cluster was not down {CLUSTER_DOWN_WITHIN_S} s after the stop")


async def _until_cluster_ok(ports: list[int]) -> None:
    for port in ports:
        client = redis.asyncio.Redis(port=port, socket_timeout=5)
        try:
            for _ in range(300):  # at most a minute
                if b"cluster_state:ok" in await client.execute_command("CLUSTER", "INFO"):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"cluster node {port} not ok a minute after the resume")
        finally:
            await client.aclose()


def _master_to_stop(ports: list[int], keys_kept: list[str]) -> int:
    """A master that serves none of `keys_kept`'s slots: those answer CLUSTERDOWN, rather than time out,
    once the cluster is down."""
    serving = {_master_of(ports, key)[0] for key in keys_kept}
    return next(port for port in ports if port not in serving)


async def _probe_while_down(
    world: GatewayPipeline, key: Key, intent_id: uuid.UUID, stream: str, streams_port: int
) -> None:
    """What a caller and a stage meet while the cluster is down: the real errors, taken for an outage."""
    response = await world.send("GET", f"/intents/{intent_id}", key=key)
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (503, "UNAVAILABLE"), body
    assert response.headers["Retry-After"].isdigit()
    # What the streams' master, up all along, answers a stage's publish. (Through redis-py's cluster
    # client the same reply is raised after its retries, which refresh the slot map and so may first wait
    # out a socket timeout on the stopped master: a TimeoutError, an outage too.)
    client = redis.asyncio.Redis(port=streams_port, socket_timeout=PROBE_SOCKET_TIMEOUT_S)
    try:
        with pytest.raises(redis.exceptions.ClusterDownError) as raised:
            await client.xadd(stream, {"probe": "1"})
    finally:
        await client.aclose()
    assert dependency_down(raised.value) == "redis"


async def _stop_a_while(
    world: GatewayPipeline, cluster_url: str, key: Key, stream: str, accepted: list[uuid.UUID]
) -> None:
    """Once STOP_AFTER_ACCEPTED intents are in: stop a master until the cluster is down, probe, then
    resume it and wait for the cluster to be whole again."""
    ports = _ports(cluster_url)
    stopped_port = _master_to_stop(ports, [stream, nonce_key(key.key_id, "any")])
    streams_port = _master_of(ports, stream)[0]
    for _ in range(6_000):  # at most a minute
        if len(accepted) >= STOP_AFTER_ACCEPTED:
            break
        await asyncio.sleep(0.01)
    pid = _pid_of(stopped_port)
    os.kill(pid, signal.SIGSTOP)
    try:
        await _until_cluster_down(streams_port)
        await _probe_while_down(world, key, accepted[0], stream, streams_port)
        await asyncio.sleep(RESUME_AFTER_DOWN_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    await _until_cluster_ok(ports)


async def test_a_master_away_costs_retries_and_nothing_else(fresh_database, own_cluster: str) -> None:
    topology = isolated_topology(claim_idle_ms=10_000)
    async with gateway_on_pipeline(fresh_database, own_cluster, topology) as world:
        pipeline = world.pipeline
        base = random.randrange(10**12, 10**14, 10**6)
        senders, recipients = list(range(base, base + USERS)), list(range(base + USERS, base + 2 * USERS))
        await pipeline.wait_finished([(await pipeline.fund(user, FUNDS_MINOR)).id for user in senders])
        key = await world.key(AUTH_CENTER_SCOPES, "P2P_TRANSFER")
        plan = [(random.choice(senders), random.choice(recipients), random.randint(100, 9_999)) for _ in range(INTENTS)]

        answers: collections.Counter[tuple[int, str]] = collections.Counter()
        accepted: list[uuid.UUID] = []
        queue = iter(plan)
        deadline_s = time.monotonic() + 120

        async def caller() -> None:
            for sender, recipient, amount in queue:
                body = {"operation_type": "P2P_TRANSFER", "amount_minor": amount, "currency": "THB",
                        "recipient_id": recipient}  # fmt: skip
                accepted.append(await post_until_accepted(world, key, body, sender, answers, deadline_s))

        stream = topology.stages["validation"].stream
        stopper = asyncio.create_task(_stop_a_while(world, own_cluster, key, stream, accepted))
        await asyncio.gather(*(caller() for _ in range(CALLERS)), stopper)

        finished = await pipeline.wait_finished(accepted, timeout_s=90)
        assert len(set(accepted)) == INTENTS and await world.writes_by(key) == (INTENTS, INTENTS)
        assert {intent.state for intent in finished.values()} == {State.SETTLED}
        await assert_balances_after(pipeline.balance, plan, senders, recipients, FUNDS_MINOR)
        await assert_converged(world, accepted)
        assert set(answers) <= {(202, ""), (503, "UNAVAILABLE"), (409, "REQUEST_IN_FLIGHT")}, answers
