"""The composition root of every consumer process (the stages, the poller, the outbox worker): the one
place that turns settings into connections and wires the real adapters. Tests and handlers never read
the environment; they get a `StageContext` (consumers/context.py) built here or from fakes.

    async with open_stage_context(database_url, redis_url, ledger_url, topology, settings) as context: ...
    await run_outbox_process(settings, database_url, redis_url, topology)     # until cancelled
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import channels
from consumers.context import StageContext
from ledger import open_ledger
from pm.config.constants import (
    STAGE_DATABASE_CONNECTIONS_MAX,
    STAGE_REDIS_CONNECT_TIMEOUT_S,
    STAGE_REDIS_SOCKET_TIMEOUT_S,
)
from pm.config.settings import Settings
from pm.config.topology import Topology, load_topology
from pm.domain.psp import PspTimings
from pm.psp.client import PspClient
from pm.redis.limit_counters import Durability
from pm.redis.wire import redis_from_url
from pm.store.pool import close_pool, open_pool


@contextlib.asynccontextmanager
async def open_stage_context(
    database_url: str,
    redis_url: str,
    ledger_url: str,
    topology: Topology | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[StageContext]:
    """Everything a stage, the poller or an in-process pipeline uses, opened and closed together."""
    settings = settings or Settings()
    for channel in channels.REGISTRY.values():
        channel.configure(PspTimings.from_settings(settings))
    psp = PspClient(settings)
    pool = await open_pool(database_url, connections_max=STAGE_DATABASE_CONNECTIONS_MAX)
    redis = redis_from_url(
        redis_url, socket_timeout=STAGE_REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=STAGE_REDIS_CONNECT_TIMEOUT_S
    )
    try:
        async with open_ledger(ledger_url) as ledger:
            yield StageContext(
                pool=pool, ledger=ledger, redis=redis, topology=topology or load_topology(), psp=psp,
                psp_status_query_interval_s=settings.psp_status_query_interval_s,
                dead_letter_entries_max=settings.dead_letter_stream_entries_max,
                idempotency_retention_s=settings.idempotency_retention_s,
                ledger_check_interval_s=settings.ledger_check_interval_s,
                miniapp_confirmation_timeout_s=settings.miniapp_confirmation_timeout_s,
                balance_snapshot_interval_s=settings.balance_snapshot_interval_s,
                consumer_prune_idle_s=settings.stream_consumer_prune_idle_s,
                webhook_retention_s=settings.webhook_retention_s,
                psp_event_retention_s=settings.psp_event_retention_s,
                ledger_request_events_max=settings.ledger_request_events_max,
                limits_durability=Durability.from_settings(settings),
                shutdown_grace_s=settings.shutdown_grace_s,
            )  # fmt: skip
    finally:
        await psp.close()
        await redis.aclose()
        await close_pool(pool)


async def run_outbox_process(settings: Settings, database_url: str, redis_url: str, topology: Topology) -> None:
    """`pm run outbox`: the feed and the row deliveries (consumers/outbox.py) until cancelled (then their
    rounds in flight get PM_SHUTDOWN_GRACE_S to finish)."""
    from consumers.outbox import run_outbox

    pool = await open_pool(database_url, connections_max=STAGE_DATABASE_CONNECTIONS_MAX)
    redis = redis_from_url(
        redis_url, socket_timeout=STAGE_REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=STAGE_REDIS_CONNECT_TIMEOUT_S
    )
    try:
        await run_outbox(
            pool, redis, topology, allowed_hosts=settings.webhook_allowed(), shutdown_grace_s=settings.shutdown_grace_s
        )
    finally:
        await redis.aclose()
        await close_pool(pool)
