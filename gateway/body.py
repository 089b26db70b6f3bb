"""Request bodies are read whole, within a time, before anything else looks at them.

aiohttp bounds a body's size (`client_max_size`: 413 PAYLOAD_TOO_LARGE) but not how long it may take to
arrive: a sender trickling a byte a second would hold its connection, and the request's memory, for
as long as it likes. This middleware (just inside the outermost one, gateway/metrics.py) reads every
body within `PM_REQUEST_BODY_TIMEOUT_MS` of the request's headers, or answers 408 REQUEST_TIMEOUT and
closes the connection (the rest of the body is never read). aiohttp keeps what was read, so the
signature check and the views read the same bytes again at no cost.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import Handler, error_response
from gateway.resources import SETTINGS
from pm.config.metrics import REQUEST_BODY_TIMEOUTS
from pm.domain.intent import ErrorCode


@web.middleware
async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Most bodies come in the packets of their headers: then there is nothing to wait for (and no timer
    # to arm, which costs more than the read).
    if request.body_exists and not request.content.is_eof():
        timeout_ms = request.app[SETTINGS].request_body_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await request.read()
        except TimeoutError:
            REQUEST_BODY_TIMEOUTS.inc()
            response = error_response(
                408, ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {timeout_ms} ms"
            )
            # What is left of the body is never read: this connection cannot carry another request.
            response.force_close()
            return response
    return await handler(request)
