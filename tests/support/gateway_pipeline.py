"""The real gateway on a running pipeline, for tests where money must move (or must not) the way a caller
meets it: the stages and the outbox worker run in-process on a fresh database (tests.support.pipeline), the
gateway runs in aiohttp's test server on the same database and Valkey, and requests are signed exactly as
a caller signs them (pm.domain.signing)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app, runner_options
from pm.config.settings import Settings
from pm.config.topology import Topology
from pm.domain import signing
from pm.store import keys
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline


@dataclasses.dataclass(frozen=True)
class Key:
    key_id: str
    secret: str


@dataclasses.dataclass
class GatewayPipeline:
    pipeline: Pipeline
    client: TestClient

    async def key(self, scopes: str, operations: str | None, merchant_id: int | None = None) -> Key:
        api_key, secret = await keys.create_key(
            self.pipeline.context.pool, f"test-{uuid.uuid4().hex[:8]}", scopes, merchant_id, operations
        )
        return Key(api_key.key_id, secret)

    async def send(
        self,
        method: str,
        path: str,
        *,
        key: Key,
        body: bytes = b"",
        user_id: int | None = None,
        idempotency_key: str | None = None,
    ) -> aiohttp.ClientResponse:
        bare_path, _, raw_query = path.partition("?")
        headers = signing.sign_headers(
            key_id=key.key_id, secret=key.secret, method=method, path=bare_path, raw_query=raw_query, body=body,
            user_id=user_id, idempotency_key=idempotency_key,
        )  # fmt: skip
        return await self.client.request(method, path, data=body or None, headers=headers)

    async def post_intent(
        self, key: Key, body: dict[str, Any], *, user_id: int | None, idempotency_key: str | None = None
    ) -> aiohttp.ClientResponse:
        return await self.send(
            "POST", "/intents", key=key, body=json.dumps(body).encode(), user_id=user_id,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )  # fmt: skip

    async def writes_by(self, key: Key) -> tuple[int, int]:
        """(intent rows, idempotency records) created with this key."""
        pool = self.pipeline.context.pool
        intents = await pool.fetchval("SELECT count(*) FROM pm.intent WHERE api_key_id = $1", key.key_id)
        records = await pool.fetchval("SELECT count(*) FROM pm.idempotency WHERE api_key_id = $1", key.key_id)
        return intents, records


@contextlib.asynccontextmanager
async def gateway_on_pipeline(
    fresh_database: Any, redis_url: str, topology: Topology | None = None, ledger_url: str | None = None
) -> AsyncIterator[GatewayPipeline]:
    """`topology`: e.g. `isolated_topology(claim_idle_ms=...)`; `ledger_url`: as `open_pipeline`'s."""
    topology = topology or isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology, ledger_url) as pipeline:
        settings = Settings()
        database_url = pipeline.database_url
        app = create_app(
            settings, database_url=database_url, redis_url=redis_url, ledger_url=ledger_url or database_url,
            topology=topology,
        )  # fmt: skip
        server = TestServer(app)
        await server.start_server(**runner_options(settings))
        async with TestClient(server) as client, pipeline.stages():
            yield GatewayPipeline(pipeline, client)


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str | None]:
    """(status, error code); the code is None when the answer is not an error (e.g. 202 with an intent)."""
    body = await response.json()
    return response.status, (body.get("error") or {}).get("code")
