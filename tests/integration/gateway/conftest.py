"""Fixtures of the gateway tests: `gateway` (one app for the module's tests, default settings) and
`make_gateway(**settings)` (an app of a test's own, e.g. with smaller bounds)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app, runner_options
from pm.config.settings import Settings
from tests.support.gateway import Gateway, MakeGateway, isolated_topology


@pytest.fixture(scope="session")
def make_gateway(postgres_url: str, redis_url: str) -> MakeGateway:
    @contextlib.asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Gateway]:
        configured = Settings(**settings)
        topology = isolated_topology()
        app = create_app(
            configured, database_url=postgres_url, redis_url=redis_url, ledger_url=postgres_url, topology=topology
        )
        server = TestServer(app)
        # Started here, because TestServer drops the runner options given to its constructor.
        await server.start_server(**runner_options(configured))
        async with TestClient(server) as client:
            yield Gateway(client, topology)

    return make


@pytest.fixture(scope="module")
async def gateway(make_gateway: MakeGateway) -> AsyncIterator[Gateway]:
    async with make_gateway() as started:
        yield started
