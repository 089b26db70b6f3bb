"""Redis clients that pack commands with hiredis (C) instead of redis-py's pure-Python packer.

redis-py's synchronous client already packs with `hiredis.pack_command` when hiredis is installed;
its asyncio client does not. Measured here, packing a stage's publish-and-ack pipeline (an XADD and
a PUBLISH per intent, each carrying the intent's JSON) took ~17 µs per command in Python and a fifth
of that with hiredis: on a 2-core machine that is several percent of the whole pipeline's CPU.

    redis = redis_from_url(url, socket_timeout=10)
    pool = redis_pool_from_url(url, aioredis.BlockingConnectionPool, max_connections=8)

A Redis or Valkey Cluster is named by its URL: `redis+cluster://host:port,host:port/` (`rediss+cluster://`
for TLS; PM_REDIS_CLUSTER=true turns a plain redis:// URL into one). `redis_from_url` then returns a
`RedisCluster` (any of the nodes given is enough to find the others), which speaks the same commands:
every caller works on either, as long as the keys of one script or transaction share a hash slot
(pm/redis/keys.py). hiredis packing applies to a single server only (RedisCluster takes no connection
class).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

from pm.config.redis_url import is_cluster_url, parse_cluster_url

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis]); the packer is optional
    hiredis = None

Pool = TypeVar("Pool", bound=aioredis.ConnectionPool)


@functools.cache
def with_hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` (plain, TLS or Unix socket connection) packing commands with hiredis."""
    if hiredis is None:
        return base

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        # As redis-py's own HiredisRespSerializer (redis/connection.py): split a command name given with
        # its subcommand ("CLIENT SETNAME"), accept what the Python packer accepts.
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        args = tuple(bytes(arg) if isinstance(arg, (bytearray, memoryview)) else arg for arg in args)
        for arg in args:
            if isinstance(arg, bool) or not isinstance(arg, (bytes, str, int, float)):
                raise DataError(f"Invalid input of type {type(arg).__name__!r}: convert to bytes, str, int or float")
        return [hiredis.pack_command(args)]

    def pack_commands(self: AbstractConnection, commands: Any) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]

    return type(f"Hiredis{base.__name__}", (base,), {"pack_command": pack_command, "pack_commands": pack_commands})


def redis_pool_from_url(url: str, pool_class: type[Pool] = aioredis.ConnectionPool, **kwargs: Any) -> Pool:  # type: ignore[assignment]
    pool = pool_class.from_url(url, **kwargs)
    pool.connection_class = with_hiredis_packing(pool.connection_class)
    return pool


# What a single server's pool takes and a RedisCluster does not (it keeps a pool per node of its own).
_POOL_ONLY_OPTIONS = frozenset({"timeout", "pool_class"})


def cluster_from_url(url: str, **kwargs: Any) -> RedisCluster:
    """A RedisCluster client for a cluster URL; `kwargs` as for a single server (pool-only ones dropped)."""
    parsed = parse_cluster_url(url)
    options = {name: value for name, value in kwargs.items() if name not in _POOL_ONLY_OPTIONS}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        ssl=parsed.ssl,
        username=parsed.username,
        password=parsed.password,
        **options,
    )


def redis_from_url(url: str, **kwargs: Any) -> aioredis.Redis:
    """`redis.asyncio.Redis.from_url`, packing with hiredis; closing the client closes its pool. A cluster
    URL gives a RedisCluster (module docstring), typed as a Redis: callers use the commands both have."""
    if is_cluster_url(url):
        return cluster_from_url(url, **kwargs)  # type: ignore[return-value]
    pool_class = kwargs.pop("pool_class", aioredis.ConnectionPool)
    return aioredis.Redis.from_pool(redis_pool_from_url(url, pool_class, **kwargs))


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


# Besides a server that is unreachable, loading its data (BusyLoadingError is a ConnectionError) or slow:
# a cluster that lost a master (CLUSTERDOWN, MASTERDOWN: until it is back or a replica took over), slots
# being moved (TRYAGAIN, and the client's "TTL exhausted" after too many redirections, a ClusterError),
# a slot the client's map does not cover yet, no node of the cluster reachable when the client refreshes its
# map, a master demoted under us (READONLY), and a server at its maxmemory (OOM): each an operating
# condition that passes, not a bad command.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN and "TTL exhausted." (nothing else is one)
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


def redis_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says Redis is down or dropped us (retry later; not a bug): what the gateway answers
    503 for and what a stage does not count as a delivery (pm.store.pool.database_unavailable's twin)."""
    return isinstance(exc, _UNAVAILABLE_ERRORS)
