"""HMAC authentication of every request (DESIGN.md §7) and the API keys behind it.

Order of checks, cheapest and least trusting first, so that nothing unsigned costs a write:
    1. the four X-PM-* headers are present and well formed, all signed text ASCII (else 401)
    2. the timestamp is within ±300 s of our clock                 (else 401)
    3. the key exists and is not revoked (cached for ~1 s)          (else 401)
    4. the body is read (bounded in size: 413, and in time: 408, by gateway/body.py before this)
    5. the signature matches one of the key's active secrets        (else 401; constant time; a
       mismatch re-reads a key older than 0.1 s once, so a just-rotated secret works at once; a
       previous secret counts only until its grace period ends, checked now, not when cached)
    6. the key is within its rate (`requests_per_s`, a token bucket in this process's memory,
       gateway/rate_limit.py; else 429 RATE_LIMITED with Retry-After): after the signature, so only
       the key's own requests spend its budget; before the nonce, so a refused request touches neither
       PostgreSQL nor Redis (the cached key is all it reads), and may be sent again as it was
    7. the nonce was never seen, claimed only now so garbage cannot fill a store (else 401):
       - a request with effects (POST, PUT, DELETE, ...) in PostgreSQL (pm.request_nonce), which outlives
         a Redis that lost its data; POST /intents in the very statement that creates its intent, so it
         costs no round trip of its own (the view does it: NONCE_CLAIMED_BY_VIEW);
       - a read (GET, HEAD) in Redis (SET NX EX), together with the "complete since" marker: a read signed
         before the marker's time is refused, so a Redis that lost its nonces (and with them the marker,
         rewritten by the first read that misses it) cannot be fed a captured read again
    8. the key holds the route's scope                              (else 403)
Public routes (health, readiness, metrics, the OpenAPI document) skip all of it.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import zlib

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from gateway.errors import ApiError, Handler, bad_request
from gateway.resources import API_KEY, KEYS, NONCE, NONCES, RATE_LIMITER, REDIS_BATCH, ROUTE_SCOPES
from pm.config.constants import (
    API_KEY_CACHE_ENTRIES_MAX,
    API_KEY_CACHE_TTL_S,
    API_KEY_RECHECK_S,
    NONCE_KEY_PREFIX,
    NONCE_SLOTS,
    NONCE_STORE_COMPLETE_SINCE_KEY,
    NONCE_TTL_S,
    RATE_LIMITED_RETRY_AFTER_S_MIN,
)
from pm.config.metrics import RATE_LIMITED
from pm.domain import signing
from pm.domain.intent import ErrorCode
from pm.store.keys import ApiKey, lookup_key

# A nonce is what our client sends (32 hex digits) or anything alike: bounded, no separators.
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
SIGNATURE_LENGTH_MAX = 128
# X-User-Id: a positive bigint, written the one canonical way (no sign, no leading zero).
USER_ID_PATTERN = re.compile(r"[1-9][0-9]{0,18}")
USER_ID_MAX = 2**63 - 1
# Reads: their nonces live in Redis only (cheap; a replayed read moves no money). Every other method's
# nonce is claimed in PostgreSQL.
READ_METHODS = frozenset({"GET", "HEAD"})
# Routes whose view claims the nonce in the statement that writes its effect (gateway/intents.py).
NONCE_CLAIMED_BY_VIEW = frozenset({"create_intent"})


class KeyCache:
    """API keys by id, each trusted for `ttl_s` after it was read (unknown ids too), so a revocation
    is seen within `ttl_s`. Concurrent misses of one id share a single query.

    A signature that matches none of a cached key's secrets may have been made with a secret issued
    since (`pm keys rotate`): the verifier asks again with `max_age_s=API_KEY_RECHECK_S`, so a new secret
    works at once, while a stream of bad signatures costs at most one query per key per recheck interval.
    """

    def __init__(self, pool: asyncpg.Pool, ttl_s: float = API_KEY_CACHE_TTL_S) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._loading: dict[str, asyncio.Task[ApiKey | None]] = {}

    async def get(self, key_id: str, max_age_s: float | None = None) -> ApiKey | None:
        """The key (None: no such key), read at most `max_age_s` (default: the TTL) ago."""
        entry = self._entries.get(key_id)
        if entry is not None and time.monotonic() - entry[0] < min(self._ttl_s, max_age_s or self._ttl_s):
            return entry[1]
        loading = self._loading.get(key_id)
        if loading is None:
            # A task of its own: a caller that gives up (disconnects) does not cancel the others' read.
            loading = asyncio.create_task(self._load(key_id))
            self._loading[key_id] = loading
        return await asyncio.shield(loading)

    async def _load(self, key_id: str) -> ApiKey | None:
        try:
            key = await lookup_key(self._pool, key_id)
        finally:
            del self._loading[key_id]
        if len(self._entries) >= API_KEY_CACHE_ENTRIES_MAX:
            self._entries.clear()  # a flood of made-up ids: start over rather than grow
        self._entries[key_id] = (time.monotonic(), key)
        return key


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHENTICATED, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, ErrorCode.FORBIDDEN, message)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the request's signature and scope (module docstring), then call the view."""
    name = request.match_info.route.name
    route_scopes = request.app[ROUTE_SCOPES]
    if name is not None and name in route_scopes and route_scopes[name] is None:
        return await handler(request)
    headers = request.headers
    key_id = headers.get(signing.HEADER_KEY_ID, "")
    timestamp = headers.get(signing.HEADER_TIMESTAMP, "")
    nonce = headers.get(signing.HEADER_NONCE, "")
    presented = headers.get(signing.HEADER_SIGNATURE, "")
    if not (key_id and timestamp and nonce and presented):
        raise unauthenticated("sign the request: X-PM-Key-Id, X-PM-Timestamp, X-PM-Nonce, X-PM-Signature")
    user_id = headers.get(signing.HEADER_USER_ID, "")
    idempotency_key = headers.get(signing.HEADER_IDEMPOTENCY_KEY, "")
    if not NONCE_PATTERN.fullmatch(nonce) or len(presented) > SIGNATURE_LENGTH_MAX:
        raise unauthenticated("malformed signature headers")
    # Everything signed is ASCII: aiohttp hands other bytes over as surrogates, which neither int()
    # (a "²" passes str.isdigit) nor UTF-8 encoding of the canonical string would survive.
    signed_text = (timestamp, user_id, idempotency_key, presented, request.raw_path)
    if not all(text.isascii() for text in signed_text):
        raise unauthenticated("signed headers and the path must be ASCII")
    if not signing.timestamp_fresh(timestamp):
        raise unauthenticated(f"X-PM-Timestamp is more than {signing.CLOCK_SKEW_MAX_S} s from the server's clock")
    key = await request.app[KEYS].get(key_id)
    if key is None or key.revoked:
        raise unauthenticated("unknown or revoked key")
    body = await request.read()
    path, _, raw_query = request.raw_path.partition("?")
    canonical = signing.canonical_string(
        timestamp=timestamp,
        nonce=nonce,
        method=request.method,
        path=path,
        raw_query=raw_query,
        user_id=user_id,
        idempotency_key=idempotency_key,
        body=body,
    )
    if not signing.signature_matches(key.active_secrets, canonical, presented):
        key = await request.app[KEYS].get(key_id, max_age_s=API_KEY_RECHECK_S)
        if key is None or not signing.signature_matches(key.active_secrets, canonical, presented):
            raise unauthenticated("signature does not match")
    _admit(request, key)
    # Only a verified request may claim a nonce, so unsigned traffic never writes to a store.
    await _claim_nonce(request, key, nonce, int(timestamp), name)
    scope = route_scopes.get(name) if name is not None else None
    if scope is not None and not key.allows(scope):
        raise forbidden(f"this key lacks the {scope} scope")
    request[API_KEY] = key
    return await handler(request)


def _admit(request: web.Request, key: ApiKey) -> None:
    """Spend one of the key's tokens, or refuse with 429 (step 6 of the module docstring)."""
    wait_s = request.app[RATE_LIMITER].admit(key.key_id, key.requests_per_s)
    if wait_s is None:
        return
    RATE_LIMITED.labels(key.key_id).inc()
    retry_after_s = max(RATE_LIMITED_RETRY_AFTER_S_MIN, math.ceil(wait_s))
    raise ApiError(
        429,
        ErrorCode.RATE_LIMITED,
        f"this key may send {key.requests_per_s} requests per second; retry after {retry_after_s} s",
        {"Retry-After": str(retry_after_s)},
    )


async def _claim_nonce(request: web.Request, key: ApiKey, nonce: str, timestamp_s: int, name: str | None) -> None:
    """Refuse a nonce used before (step 7 of the module docstring); for POST /intents, hand it to the view."""
    app = request.app
    if request.method not in READ_METHODS:
        if name in NONCE_CLAIMED_BY_VIEW:
            request[NONCE] = nonce
            return
        if not await app[NONCES].claim(key.key_id, nonce):
            raise unauthenticated("nonce already used")
        return
    # In this order: Redis losing its data between the two leaves the marker missing, which refuses this read.
    claimed, marker = await app[REDIS_BATCH].execute_in_order(
        ("SET", nonce_key(key.key_id, nonce), b"1", "NX", "EX", NONCE_TTL_S),
        ("GET", nonce_marker_key(key.key_id)),
    )
    if not claimed:
        raise unauthenticated("nonce already used")
    if marker is None:
        # First start, or Redis lost its data: complete from now on. If another gateway writes it first,
        # refusing by our own now is still right: we saw the loss, so our now is after it.
        complete_since_s = int(time.time())
        await app[REDIS_BATCH].execute("SET", nonce_marker_key(key.key_id), str(complete_since_s).encode(), "NX")
    else:
        complete_since_s = int(marker)
    if timestamp_s < complete_since_s:
        # Its nonce may have been stored before the store was lost: this may be a replay.
        raise unauthenticated("signed before the gateway's nonce store was last known complete; sign it again")


def _nonce_tag(key_id: str) -> str:
    """The hash tag a key's read nonces share with their marker (pm.config.constants.NONCE_SLOTS)."""
    return f"{{n{zlib.crc32(key_id.encode()) % NONCE_SLOTS}}}"


def nonce_key(key_id: str, nonce: str) -> str:
    return f"{NONCE_KEY_PREFIX}{_nonce_tag(key_id)}:{key_id}:{nonce}"


def nonce_marker_key(key_id: str) -> str:
    """The "complete since" marker that vouches for `key_id`'s read nonces (on a cluster, on their node)."""
    return f"{NONCE_STORE_COMPLETE_SINCE_KEY}:{_nonce_tag(key_id)}"


def nonce_marker_keys() -> list[str]:
    """Every marker: one per nonce slot."""
    return [f"{NONCE_STORE_COMPLETE_SINCE_KEY}:{{n{slot}}}" for slot in range(NONCE_SLOTS)]


async def mark_nonce_stores_complete(redis: aioredis.Redis) -> None:
    """At the gateway's start: every missing marker says "complete from now" (SET NX), so that only a read
    signed before this start can find one missing later and be refused, not the first read of a key."""
    now_s = str(int(time.time())).encode()
    async with redis.pipeline(transaction=False) as pipe:
        for marker in nonce_marker_keys():
            pipe.set(marker, now_s, nx=True)
        await pipe.execute()


def acting_user(request: web.Request, *, required: bool) -> int | None:
    """The signed X-User-Id as an int; a missing one is None, or 400 when `required`."""
    text = request.headers.get(signing.HEADER_USER_ID)
    if text is None or text == "":
        if required:
            raise bad_request("X-User-Id is required")
        return None
    if not USER_ID_PATTERN.fullmatch(text) or int(text) > USER_ID_MAX:
        raise bad_request("X-User-Id must be a positive integer")
    return int(text)
