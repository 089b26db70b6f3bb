"""Loopback ports for the servers a test starts, none of which another test or connection can be handed.

A port from `bind(0)` comes from the kernel's ephemeral range, the same range every outgoing connection
(PostgreSQL pools, Redis clients) takes its local port from, and every pytest-xdist worker draws from it
too: between the probe and the server's own bind, someone else may take it (seen in CI: a stage's
/metrics failing with EADDRINUSE). So each worker hands out ports from its own block below the ephemeral
range, in turn, skipping any port that is already bound.
"""

from __future__ import annotations

import itertools
import os

from pm.dev.valkey_cluster import CLUSTER_BUS_PORT_OFFSET, bindable

FIRST_PORT = 12000  # below Linux's default ephemeral range (32768-60999)
BLOCK_PORTS = 2500  # ports per xdist worker: eight workers fit below the ephemeral range
MAX_WORKERS = 8


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3"; unset when run without xdist
    index = int(worker.removeprefix("gw") or 0)
    return index % MAX_WORKERS


def _block_start() -> int:
    return FIRST_PORT + _worker_index() * BLOCK_PORTS


# Start at a pid-dependent place so two pytest sessions on one machine rarely probe the same ports.
_next_offset = itertools.count(os.getpid() % BLOCK_PORTS)


def free_port() -> int:
    """A loopback port nobody holds now, from this worker's own block, not handed out again until the block wraps."""
    start = _block_start()
    for _ in range(BLOCK_PORTS):
        port = start + next(_next_offset) % BLOCK_PORTS
        if bindable(port):
            return port
    raise RuntimeError(f"no free port in {start}..{start + BLOCK_PORTS - 1}")


def cluster_node_port() -> int:
    """A port of this worker's block whose cluster bus port (10,000 above) is free as well."""
    for _ in range(100):
        port = free_port()
        if bindable(port + CLUSTER_BUS_PORT_OFFSET):
            return port
    raise AssertionError("no port with a free cluster bus port")
