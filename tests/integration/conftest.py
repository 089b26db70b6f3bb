"""Fixtures shared by the integration tests of the outbox and the streams: a freshly migrated database's
pool, a Redis client, and a topology whose streams and channels are this test's own."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from pm.config.topology import parse_topology, renamed_document
from pm.redis.wire import redis_from_url
from pm.store.migrate import migrate


@pytest.fixture
async def pool(fresh_database):
    url = await fresh_database()
    await migrate(url)
    created = await asyncpg.create_pool(url, min_size=1, max_size=4)
    yield created
    await created.close()


@pytest.fixture
async def redis(redis_url: str):
    client = redis_from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def topology():
    return parse_topology(renamed_document(f"t{uuid.uuid4().hex[:10]}:"))
