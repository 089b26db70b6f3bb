"""Typed keys of what the gateway's views share: the app's resources and what a request carries.

Only names live here (no behaviour), so every gateway module can import it without import cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from pm.config.settings import Settings
from pm.config.topology import Topology
from pm.store.keys import ApiKey

if TYPE_CHECKING:
    from gateway.auth import KeyCache
    from gateway.backpressure import BacklogMonitor
    from gateway.batching import IntentWriter, NonceRecorder, RedisBatch
    from gateway.rate_limit import RateLimiter
    from gateway.status import StatusHub
    from gateway.stream_slots import StreamSlots
    from ledger import Ledger
    from pm.psp.client import PspClient

SETTINGS = web.AppKey("settings", Settings)
TOPOLOGY = web.AppKey("topology", Topology)
DATABASE = web.AppKey("database", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
LEDGER: web.AppKey[Ledger] = web.AppKey("ledger")
KEYS: web.AppKey[KeyCache] = web.AppKey("keys")
# Each key's token bucket (gateway/rate_limit.py), checked after its signature.
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
# Concurrent requests' new intents, Redis commands (nonces, stream entries) and stored responses, batched.
INTENT_WRITER: web.AppKey[IntentWriter] = web.AppKey("intent_writer")
REDIS_BATCH: web.AppKey[RedisBatch] = web.AppKey("redis_batch")
# Nonces of signed requests with effects, claimed in PostgreSQL (gateway/auth.py).
NONCES: web.AppKey[NonceRecorder] = web.AppKey("nonces")
STATUS_HUB: web.AppKey[StatusHub] = web.AppKey("status_hub")
# Open SSE streams, bounded per caller and per process (gateway/stream_slots.py).
STREAM_SLOTS: web.AppKey[StreamSlots] = web.AppKey("stream_slots")
# The payment service providers: callback signatures (issue 5).
PSP: web.AppKey[PspClient] = web.AppKey("psp")
BACKLOG: web.AppKey[BacklogMonitor] = web.AppKey("backlog")
# The required scope of each named route (None: public, no signature); filled by create_app.
ROUTE_SCOPES: web.AppKey[dict[str, str | None]] = web.AppKey("route_scopes")

# Set by the authentication middleware on every signed request.
API_KEY = web.RequestKey("api_key", ApiKey)
# Set by the authentication middleware on a request whose view claims the nonce itself, in the statement
# that writes its effect (POST /intents: gateway/intents.py), instead of the middleware claiming it.
NONCE = web.RequestKey("nonce", str)
