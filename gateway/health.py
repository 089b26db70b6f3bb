"""Public routes (no signature): liveness, readiness, metrics, and the OpenAPI document.

GET /healthz        200 while the process serves requests
GET /readyz         200 when PostgreSQL ("database"), Redis ("redis") and the ledger ("ledger") each
                    answer within a short timeout; 503 naming the ones that did not (`down`)
GET /metrics        this process's Prometheus metrics
GET /openapi.json   the API description (gateway/openapi.py)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway.errors import json_response
from gateway.openapi import openapi_document
from gateway.resources import DATABASE, LEDGER, REDIS
from ledger import accounts
from pm.config.constants import BACKPRESSURE_RETRY_AFTER_S, READY_CHECK_TIMEOUT_S
from pm.domain.intent import ErrorCode

# The ledger probe may not be cancelled (a cancelled TigerBeetle call breaks the client, DESIGN.md
# §10): a slow one is left to finish, and the next probes wait for it instead of piling up.
# create_app sets it to an empty dict.
LEDGER_PROBE: web.AppKey[dict[str, asyncio.Task[Any]]] = web.AppKey("ledger_probe")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    names = ("database", "redis", "ledger")
    results = await asyncio.gather(
        _check(app[DATABASE].fetchval("SELECT 1")),
        _check(app[REDIS].ping()),
        _probe_ledger(app),
    )
    checks = dict(zip(names, results, strict=True))
    failed = [name for name, result in checks.items() if result != "ok"]
    if not failed:
        return json_response({"status": "ready", "checks": checks})
    error = {"code": str(ErrorCode.UNAVAILABLE), "message": f"not ready: {', '.join(failed)}"}
    headers = {"Retry-After": str(BACKPRESSURE_RETRY_AFTER_S)}
    body = {"status": "unavailable", "down": failed, "checks": checks, "error": error}
    return json_response(body, 503, headers)


async def _check(probe: Awaitable[Any]) -> str:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await probe
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # any failure means "not ready"; the kind is reported
        return f"error: {type(exc).__name__}"
    return "ok"


async def _probe_ledger(app: web.Application) -> str:
    probes = app[LEDGER_PROBE]
    task = probes.get("running")
    if task is None or task.done():
        task = asyncio.create_task(app[LEDGER].lookup_accounts([accounts.transit("THB").id]))
        probes["running"] = task
    done, _ = await asyncio.wait({task}, timeout=READY_CHECK_TIMEOUT_S)
    if not done:
        return "timeout"
    if task.exception() is not None:
        return f"error: {type(task.exception()).__name__}"
    return "ok"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
