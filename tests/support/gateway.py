"""A gateway on real servers for a test: the app in aiohttp's test server, streams and a status channel
of its own (so tests never see each other's entries), API keys made on the spot, and signed requests."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.resources import DATABASE, REDIS
from pm.client import PMClient
from pm.config.constants import KEY_REQUESTS_PER_S_DEFAULT
from pm.config.topology import Topology, parse_topology, renamed_document
from pm.domain import signing
from pm.store import keys
from pm.store.keys import SCOPE_ADMIN, SCOPE_BALANCE_READ, SCOPE_INTENTS_READ, SCOPE_INTENTS_WRITE

ALL_BUT_ADMIN = (SCOPE_INTENTS_WRITE, SCOPE_INTENTS_READ, SCOPE_BALANCE_READ)
ADMIN = (SCOPE_ADMIN,)
MERCHANT_SCOPES = (SCOPE_INTENTS_WRITE, SCOPE_INTENTS_READ)
# The operation types test keys may create, by kind of key (pm.store.keys: every key carries its list).
USER_OPERATIONS = "P2P_TRANSFER,IPPS_WITHDRAWAL,THAI_QR_PAY,QP_TOPUP"
ADMIN_OPERATIONS = USER_OPERATIONS + ",ADMIN_ADJUSTMENT"
MERCHANT_OPERATIONS = "MINIAPP_CHARGE,MINIAPP_CREDIT"
# Users of the session's shared database: a random base, so reruns against a kept server never collide.
_users = itertools.count(random.randrange(10**12, 10**15, 10**6))


def new_user() -> int:
    return next(_users)


def isolated_topology() -> Topology:
    """streams.yaml with every stream, dead-letter stream and the status channel renamed for one test."""
    return parse_topology(renamed_document(f"gw{uuid.uuid4().hex[:10]}:"))


@dataclasses.dataclass(frozen=True)
class Key:
    key_id: str
    secret: str


def p2p_body(recipient_id: int, amount_minor: int = 10_000, **extra: Any) -> bytes:
    body = {
        "operation_type": "P2P_TRANSFER",
        "amount_minor": amount_minor,
        "currency": "THB",
        "recipient_id": recipient_id,
        **extra,
    }
    return json.dumps(body).encode()


@dataclasses.dataclass
class Gateway:
    client: TestClient
    topology: Topology

    @property
    def pool(self) -> asyncpg.Pool:
        return self.client.app[DATABASE]

    @property
    def redis(self) -> aioredis.Redis:
        return self.client.app[REDIS]

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def key(
        self,
        *scopes: str,
        merchant_id: int | None = None,
        operations: str | None = None,
        requests_per_s: int = KEY_REQUESTS_PER_S_DEFAULT,
    ) -> Key:
        """A new key; without `operations`, the list its kind of caller has (explicit, never a default)."""
        # A merchant's key never holds balance:read (pm.store.keys.MERCHANT_KEY_REFUSED_SCOPES).
        scopes = scopes or (MERCHANT_SCOPES if merchant_id is not None else ALL_BUT_ADMIN)
        if operations is None:
            writes = SCOPE_INTENTS_WRITE in scopes or SCOPE_ADMIN in scopes
            if not writes:
                operations = "none"
            elif merchant_id is not None:
                operations = MERCHANT_OPERATIONS
            else:
                operations = ADMIN_OPERATIONS if SCOPE_ADMIN in scopes else USER_OPERATIONS
        api_key, secret = await keys.create_key(
            self.pool, f"test-{uuid.uuid4().hex[:8]}", scopes, merchant_id, operations, requests_per_s
        )
        return Key(api_key.key_id, secret)

    def pm_client(self, key: Key) -> PMClient:
        return PMClient(self.base_url, key.key_id, key.secret)

    async def send(
        self,
        method: str,
        path: str,
        *,
        key: Key,
        body: bytes = b"",
        user_id: int | str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> aiohttp.ClientResponse:
        """A request signed exactly as sent (path with its query as written here)."""
        bare_path, _, raw_query = path.partition("?")
        signed = signing.sign_headers(
            key_id=key.key_id,
            secret=key.secret,
            method=method,
            path=bare_path,
            raw_query=raw_query,
            body=body,
            user_id=user_id,
            idempotency_key=idempotency_key,
            timestamp=timestamp,
            nonce=nonce,
        )
        return await self.raw(method, path, body=body, headers={**signed, **(headers or {})})

    async def raw(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        return await self.client.request(method, path, data=body or None, headers=headers or {})

    async def post_intent(
        self, key: Key, body: bytes, *, user_id: int | None, idempotency_key: str | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        return await self.send(
            "POST",
            "/intents",
            key=key,
            body=body,
            user_id=user_id,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            **kwargs,
        )

    async def stream_length(self) -> int:
        return int(await self.redis.xlen(self.topology.first_stage.stream))

    async def writes_by(self, key: Key) -> tuple[int, int]:
        """(intent rows, idempotency rows) created with this key."""
        intents = await self.pool.fetchval("SELECT count(*) FROM pm.intent WHERE api_key_id = $1", key.key_id)
        claims = await self.pool.fetchval("SELECT count(*) FROM pm.idempotency WHERE api_key_id = $1", key.key_id)
        return intents, claims


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["error"]["code"]


# What the `make_gateway` fixture (tests/integration/gateway/conftest.py) is: `make_gateway(**settings)`.
MakeGateway = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]
