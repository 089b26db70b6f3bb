"""Prometheus metrics of the gateway process, served by `GET /metrics` (DESIGN.md §8).

Requests are counted by route (the route's template, never the raw path, so ids do not explode the
label set), method and status; their latency goes into one histogram per route.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from gateway.errors import Handler, to_error_response

HTTP_REQUESTS = Counter(
    "pm_http_requests_total", "HTTP requests answered by the gateway", ["route", "method", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "pm_http_request_seconds",
    "Time from a request's arrival at the app to its answer (an SSE stream: until it ends)",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INTENTS_CREATED = Counter("pm_gateway_intents_created_total", "Intents created by POST /intents", ["operation_type"])
INTENT_PUBLISH_FAILURES = Counter(
    "pm_gateway_publish_failures_total",
    "Intents created whose first stream entry could not be written (the status poller re-drives them)",
)
IDEMPOTENT_REPLAYS = Counter(
    "pm_gateway_idempotent_replays_total", "POST /intents answered from a stored idempotent response"
)
OVERLOADED = Counter("pm_gateway_overloaded_total", "POST /intents refused because the pipeline's backlog is full")
SSE_STREAMS_OPEN = Gauge("pm_gateway_sse_streams_open", "GET /intents/{id}/events streams open in this process")
SSE_STREAMS_REFUSED = Counter(
    "pm_gateway_sse_streams_refused_total",
    "Event streams refused: `per_user` (that caller has PM_SSE_STREAMS_PER_USER_MAX open), `total` (the process)",
    ["limit"],
)

UNMATCHED_ROUTE = "unmatched"


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: errors become JSON answers, then every answer is counted and timed."""
    started_s = time.perf_counter()
    response = await to_error_response(request, handler)
    route = route_label(request)
    HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
    HTTP_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started_s)
    return response
