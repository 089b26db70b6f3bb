"""The gateway's composition root: routes, middlewares, and the resources every view shares.

    app = create_app(settings, database_url=..., redis_url=..., ledger_url=...)
    await run_gateway(settings, database_url=..., redis_url=..., ledger_url=...)   # serves until cancelled

Each resource is opened and closed by one async generator in `cleanup_ctx`, in order: PostgreSQL pool,
Redis client, ledger, then what is built on them (API key cache, status hub, backlog monitor), closed
in reverse. `topology` may be given (tests use streams of their own); by default it is streams.yaml.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from aiohttp.web_log import AccessLogger

from gateway import account, admin_fee_rules, consent, health, intents, psp_callbacks, quote
from gateway.admin_api import ADMIN_ROUTES
from gateway.auth import KeyCache, authenticate, mark_nonce_stores_complete
from gateway.backpressure import BacklogMonitor
from gateway.batching import IntentWriter, NonceRecorder, RedisBatch
from gateway.body import read_body_in_time
from gateway.errors import Handler
from gateway.metrics import observe
from gateway.rate_limit import RateLimiter
from gateway.resources import (
    BACKLOG,
    DATABASE,
    INTENT_WRITER,
    KEYS,
    LEDGER,
    NONCES,
    PSP,
    RATE_LIMITER,
    REDIS,
    REDIS_BATCH,
    ROUTE_SCOPES,
    SETTINGS,
    STATUS_HUB,
    STREAM_SLOTS,
    TOPOLOGY,
)
from gateway.status import StatusHub
from gateway.stream_slots import StreamSlots
from ledger import open_ledger
from pm.config.constants import (
    GATEWAY_LINGERING_TIME_S,
    GATEWAY_REDIS_CONNECT_TIMEOUT_S,
    GATEWAY_REDIS_POOL_WAIT_S,
    GATEWAY_REDIS_SOCKET_TIMEOUT_S,
)
from pm.config.redis_url import is_cluster_url
from pm.config.settings import Settings
from pm.config.topology import Topology, load_topology
from pm.psp.client import PspClient
from pm.redis.streams import check_cluster_topology
from pm.redis.wire import redis_from_url
from pm.store.keys import (
    SCOPE_ADMIN,
    SCOPE_BALANCE_READ,
    SCOPE_CONSENT_WRITE,
    SCOPE_INTENTS_READ,
    SCOPE_INTENTS_WRITE,
)
from pm.store.pool import close_pool, open_pool

log = logging.getLogger("pm.gateway")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str
    scope: str | None  # None: public, no signature


ROUTES = (
    Route("POST", "/intents", intents.create_intent, "create_intent", SCOPE_INTENTS_WRITE),
    Route("GET", "/intents/{id}", intents.get_intent, "get_intent", SCOPE_INTENTS_READ),
    Route("GET", "/intents/{id}/events", intents.intent_events, "intent_events", SCOPE_INTENTS_READ),
    Route("GET", "/api/pm/balance", account.balance, "balance", SCOPE_BALANCE_READ),
    Route("GET", "/api/pm/history", account.history, "history", SCOPE_BALANCE_READ),
    # A user's consent to mini-app charges (gateway/consent.py): the app's key, through the nginx edge.
    Route("POST", "/intents/{id}/confirm", consent.confirm, "confirm_intent", SCOPE_CONSENT_WRITE),
    Route("GET", "/api/pm/allowances", consent.list_allowances, "list_allowances", SCOPE_CONSENT_WRITE),
    Route("PUT", "/api/pm/allowances/{merchant_id}", consent.put_allowance, "put_allowance", SCOPE_CONSENT_WRITE),
    Route(
        "DELETE", "/api/pm/allowances/{merchant_id}", consent.delete_allowance, "delete_allowance", SCOPE_CONSENT_WRITE
    ),
    Route("POST", "/quote", quote.quote, "quote", SCOPE_INTENTS_WRITE),
    Route("POST", "/admin/fee-rules", admin_fee_rules.create_fee_rule, "create_fee_rule", SCOPE_ADMIN),
    Route("GET", "/admin/fee-rules", admin_fee_rules.list_fee_rules, "list_fee_rules", SCOPE_ADMIN),
    Route("GET", "/admin/fee-rules/{id}", admin_fee_rules.get_fee_rule, "get_fee_rule", SCOPE_ADMIN),
    Route("PUT", "/admin/fee-rules/{id}", admin_fee_rules.update_fee_rule, "update_fee_rule", SCOPE_ADMIN),
    Route("DELETE", "/admin/fee-rules/{id}", admin_fee_rules.delete_fee_rule, "delete_fee_rule", SCOPE_ADMIN),
    *(Route(*admin_route) for admin_route in ADMIN_ROUTES),  # limit rules, routes, audit (gateway/admin_api.py)
    # Signed by the PSP (X-PSP-Signature), not by an API key: public to our HMAC middleware.
    Route("POST", "/psp/{channel}/callback", psp_callbacks.callback, "psp_callback", None),
    Route("GET", "/healthz", health.healthz, "healthz", None),
    Route("GET", "/readyz", health.readyz, "readyz", None),
    Route("GET", "/metrics", health.metrics, "metrics", None),
    Route("GET", "/openapi.json", health.openapi, "openapi", None),
)


def create_app(
    settings: Settings,
    *,
    database_url: str,
    redis_url: str,
    ledger_url: str,
    topology: Topology | None = None,
) -> web.Application:
    app = web.Application(
        client_max_size=settings.http_body_bytes_max, middlewares=[observe, read_body_in_time, authenticate]
    )
    app[SETTINGS] = settings
    app[TOPOLOGY] = topology or load_topology(settings.streams_file)
    app[ROUTE_SCOPES] = {route.name: route.scope for route in ROUTES}
    app[RATE_LIMITER] = RateLimiter()
    app[health.LEDGER_PROBE] = {}
    app[PSP] = PspClient(settings)  # only its callback signature check: the gateway calls no PSP
    quote.add_resources(app)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    app.cleanup_ctx.extend(
        [
            _database(database_url, settings),
            _redis(redis_url, settings),
            _ledger(ledger_url),
            _built_on_resources,
        ]
    )
    app.on_shutdown.append(_stop_waiting)
    return app


def runner_options(settings: Settings) -> dict[str, Any]:
    """Options of aiohttp's runner (and of its test server): parser limits and the access log."""
    return {
        "access_log": logging.getLogger("aiohttp.access") if settings.http_access_log else None,
        "access_log_class": AccessLogger,
        "max_line_size": settings.http_header_line_bytes_max,
        "max_field_size": settings.http_header_field_bytes_max,
        "shutdown_timeout": settings.shutdown_grace_s,
        "lingering_time": GATEWAY_LINGERING_TIME_S,
    }


async def run_gateway(
    settings: Settings,
    *,
    database_url: str,
    redis_url: str,
    ledger_url: str,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve on PM_HTTP_HOST:PM_HTTP_PORT until cancelled (Ctrl-C, SIGTERM), then shut down gracefully.

    `started`, if given, is called with the URL once the socket listens."""
    app = create_app(settings, database_url=database_url, redis_url=redis_url, ledger_url=ledger_url)
    runner = web.AppRunner(app, handle_signals=False, **runner_options(settings))
    await runner.setup()
    try:
        # reuse_port: several gateway processes (`pm up -c gateway=2`) share one port; the kernel
        # spreads connections across them.
        site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True, reuse_port=True)
        await site.start()
        url = f"http://{settings.http_host}:{settings.http_port}"
        log.info("gateway listening", extra={"url": url})
        if started is not None:
            started(url)
        await asyncio.Event().wait()  # Serves until cancelled: meant to run forever.
    finally:
        await runner.cleanup()


# -- resources, one async generator each -----------------------------------------------------------


def _database(database_url: str, settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = await open_pool(database_url, connections_max=settings.http_database_connections_max)
        app[DATABASE] = pool
        try:
            yield
        finally:
            await close_pool(pool)

    return context


def _redis(redis_url: str, settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        # Requests share pipelined round trips (gateway/batching.py), so few connections serve many
        # requests; when all are busy a command waits for one (bounded) rather than failing. A cluster
        # client keeps that many per node.
        client = redis_from_url(
            redis_url,
            **({} if is_cluster_url(redis_url) else {"pool_class": aioredis.BlockingConnectionPool}),
            max_connections=settings.http_redis_connections_max,
            timeout=GATEWAY_REDIS_POOL_WAIT_S,
            socket_timeout=GATEWAY_REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=GATEWAY_REDIS_CONNECT_TIMEOUT_S,
            health_check_interval=0,
        )
        app[REDIS] = client
        check_cluster_topology(client, app[TOPOLOGY])
        try:
            await mark_nonce_stores_complete(client)
        except redis.exceptions.RedisError as exc:  # Redis down at the start: the first reads write them
            log.warning("could not mark the nonce stores complete", extra={"error": str(exc)})
        try:
            yield
        finally:
            await client.aclose()

    return context


def _ledger(ledger_url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with open_ledger(ledger_url) as ledger:
            app[LEDGER] = ledger
            yield

    return context


async def _stop_waiting(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for in-flight requests: long waits end now, with an answer.
    app[STATUS_HUB].begin_closing()


async def _built_on_resources(app: web.Application) -> AsyncIterator[None]:
    topology = app[TOPOLOGY]
    first_stage = topology.first_stage
    app[KEYS] = KeyCache(app[DATABASE])
    app[INTENT_WRITER] = IntentWriter(app[DATABASE])
    app[REDIS_BATCH] = RedisBatch(app[REDIS])
    app[NONCES] = NonceRecorder(app[DATABASE])
    app[BACKLOG] = BacklogMonitor(
        app[REDIS], first_stage.stream, first_stage.group, app[SETTINGS].backpressure_backlog_entries_max
    )
    settings = app[SETTINGS]
    app[STREAM_SLOTS] = StreamSlots(settings.sse_streams_max, settings.sse_streams_per_user_max)
    hub = StatusHub(app[REDIS])
    app[STATUS_HUB] = hub
    await hub.start()
    try:
        yield
    finally:
        await hub.close()
