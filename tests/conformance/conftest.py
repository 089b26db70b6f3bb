"""Fixtures for the ledger conformance suite: the same tests run once per backend.

`ledger` is parametrized with the ids `memory`, `postgres` and `tigerbeetle`:
- memory: a fresh `memory://` ledger per test;
- postgres: `open_ledger(postgres_url)`, where `postgres_url` (tests/conftest.py) is a migrated
  database on embedded PostgreSQL shared by the whole session;
- tigerbeetle: the official client against the cluster in `PM_TIGERBEETLE_ADDRESSES`
  (cluster `PM_TIGERBEETLE_CLUSTER_ID`, default 0), skipped with a visible reason when unset.
The postgres and tigerbeetle ledgers are shared, so every test uses fresh ids and its own ledger number.
"""

from __future__ import annotations

import os

import pytest

from ledger import open_ledger

BACKENDS = ("memory", "postgres", "tigerbeetle")


def tigerbeetle_url() -> str | None:
    addresses = os.environ.get("PM_TIGERBEETLE_ADDRESSES", "").strip()
    if not addresses:
        return None
    cluster = os.environ.get("PM_TIGERBEETLE_CLUSTER_ID", "0")
    return f"tigerbeetle://{addresses}?cluster={cluster}"


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest) -> str:
    backend = request.param
    if backend == "memory":
        return "memory://"
    if backend == "postgres":
        return request.getfixturevalue("postgres_url")
    url = tigerbeetle_url()
    if url is None:
        pytest.skip(
            "PM_TIGERBEETLE_ADDRESSES is not set: no TigerBeetle cluster to check conformance against"
        )
    return url


@pytest.fixture
async def ledger(ledger_url: str):
    async with open_ledger(ledger_url) as led:
        yield led
