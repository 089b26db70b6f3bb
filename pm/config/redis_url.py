"""Redis URLs: a single server (redis://, rediss://, unix://) or a Redis/Valkey Cluster
(`redis+cluster://[user:password@]host:port,host:port[/0]`, `rediss+cluster://` for TLS). Pure parsing,
so the settings can refuse a bad URL when they are read; pm/redis/wire.py opens the clients."""

from __future__ import annotations

import dataclasses
import urllib.parse

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
CLUSTER_NODES_MAX = 64


class RedisUrlError(ValueError):
    """A Redis URL that names no server: its message is one line for the operator."""


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def as_cluster_url(url: str) -> str:
    """`url` as a cluster URL (PM_REDIS_CLUSTER=true): redis:// becomes redis+cluster://."""
    scheme, separator, rest = url.partition("://")
    if not separator or is_cluster_url(url):
        return url
    if scheme.lower() not in ("redis", "rediss"):
        raise RedisUrlError(f"PM_REDIS_CLUSTER needs a redis:// or rediss:// URL, not {scheme}://")
    return f"{scheme.lower()}+cluster://{rest}"


@dataclasses.dataclass(frozen=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    ssl: bool
    username: str | None
    password: str | None


def parse_cluster_url(url: str) -> ClusterUrl:
    """The nodes and credentials of `redis+cluster://[user:password@]host:port,host:port[/0]`."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise RedisUrlError(f"not a cluster URL (redis+cluster://host:port,...): {scheme}://")
    authority, _, path = rest.partition("/")
    credentials, _, hosts = authority.rpartition("@")
    if path.strip("/") not in ("", "0"):
        raise RedisUrlError("a Redis Cluster has database 0 only: drop the /N from the URL")
    username, _, password = credentials.partition(":")
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise RedisUrlError(f"a cluster node must be host:port, not {part.strip()!r}")
        nodes.append((host.strip("[]"), int(port)))
    if len(nodes) > CLUSTER_NODES_MAX:
        raise RedisUrlError(f"at most {CLUSTER_NODES_MAX} cluster nodes in the URL, not {len(nodes)}")
    return ClusterUrl(
        nodes=tuple(nodes),
        ssl=CLUSTER_SCHEMES[scheme.lower()] == "rediss",
        username=urllib.parse.unquote(username) or None,
        password=urllib.parse.unquote(password) or None,
    )
