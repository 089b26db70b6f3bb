"""The HTTP edge of the Payment Manager (aiohttp): HMAC, idempotency, validation, then a stream entry.

    app = create_app(settings, database_url=..., redis_url=..., ledger_url=...)
    await run_gateway(settings, database_url=..., redis_url=..., ledger_url=...)   # serves until cancelled

Modules, one job each: `app` (composition root, routes, resources), `auth` (HMAC and API keys),
`errors` (the one place errors become JSON), `models` (request bodies), `intents`, `account`, `health`
(the views), `status` (the shared status pub/sub connection), `batching` (round trips shared by
concurrent requests), `backpressure`, `metrics`, `openapi`, `resources` (typed app keys).
"""

from gateway.app import create_app, run_gateway

__all__ = ["create_app", "run_gateway"]
