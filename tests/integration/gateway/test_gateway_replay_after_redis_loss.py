"""Proves that a captured signed request cannot be replayed after Redis lost its data (issue 10, item 5),
on a Valkey of this module's own that is really flushed (FLUSHALL) between the two sends: an admin POST
(a limit rule), a POST /intents and a GET are each refused 401 the second time with nothing written twice
(requests with effects keep their nonces in PostgreSQL; a read signed before the nonce store was last
known complete is refused), while requests signed after the loss go through."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app, runner_options
from gateway.auth import nonce_marker_key
from pm.config.settings import Settings
from pm.dev.embedded import running_valkey
from pm.domain import signing
from pm.store.migrate import migrate
from tests.support.gateway import ADMIN, Gateway, Key, error_of, isolated_topology, new_user, p2p_body

LIMIT_RULE = {"currency": "THB", "operation_type": "P2P_TRANSFER", "tag": None, "period": "daily",
              "max_amount_minor": 50_000, "max_count": None}  # fmt: skip


@pytest.fixture(scope="module")
def lossy_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Valkey for this module alone: flushing it cannot disturb any other test."""
    with running_valkey(Path(tmp_path_factory.mktemp("valkey-lossy"))) as url:
        yield url


@pytest.fixture
async def gateway(fresh_database, lossy_redis_url: str) -> AsyncIterator[Gateway]:
    """A gateway on a fresh database (its limit rules touch no other test) and the module's Valkey."""
    database_url = await fresh_database()
    await migrate(database_url)
    settings = Settings()
    topology = isolated_topology()
    app = create_app(
        settings, database_url=database_url, redis_url=lossy_redis_url, ledger_url=database_url, topology=topology
    )
    server = TestServer(app)
    await server.start_server(**runner_options(settings))
    async with TestClient(server) as client:
        yield Gateway(client, topology)


def _signed(key: Key, method: str, path: str, body: bytes = b"", **extra: object) -> dict[str, str]:
    bare_path, _, raw_query = path.partition("?")
    return signing.sign_headers(
        key_id=key.key_id, secret=key.secret, method=method, path=bare_path, raw_query=raw_query, body=body,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def _wait_for_next_second() -> None:
    """Timestamps are whole seconds: sleep into the next one, so what is signed now is strictly later."""
    await asyncio.sleep(1.05 - (time.time() % 1))


async def test_captured_requests_are_refused_after_redis_lost_everything(gateway: Gateway) -> None:
    admin, app = await gateway.key(*ADMIN), await gateway.key()
    user = new_user()
    # Before the capture, the gateway has run a while: its nonce store has been complete since then.
    assert (await gateway.send("GET", "/api/pm/balance?currency=THB", key=app, user_id=user)).status == 200
    await _wait_for_next_second()

    rule_body = json.dumps(LIMIT_RULE).encode()
    rule_headers = _signed(admin, "POST", "/admin/limit-rules", rule_body, user_id=7)
    intent_body = p2p_body(new_user())
    intent_headers = _signed(app, "POST", "/intents", intent_body, user_id=user, idempotency_key=uuid.uuid4().hex)
    read_headers = _signed(app, "GET", "/api/pm/balance?currency=THB", user_id=user)
    captured = [
        ("POST", "/admin/limit-rules", rule_body, rule_headers, 201),
        ("POST", "/intents", intent_body, intent_headers, 202),
        ("GET", "/api/pm/balance?currency=THB", b"", read_headers, 200),
    ]
    for method, path, body, headers, status in captured:
        first = await gateway.raw(method, path, body=body, headers=headers)
        assert first.status == status, (path, await first.text())
    rules_before = await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule")
    assert await gateway.writes_by(app) == (1, 1) and await gateway.stream_length() == 1

    await _wait_for_next_second()
    assert await gateway.redis.flushall() is True
    assert await gateway.redis.dbsize() == 0

    replayed = [await gateway.raw(method, path, body=body, headers=headers) for method, path, body, headers, _ in
                captured]  # fmt: skip
    assert [response.status for response in replayed] == [401, 401, 401]
    assert {(await response.json())["error"]["code"] for response in replayed} == {"UNAUTHENTICATED"}
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule") == rules_before
    assert await gateway.writes_by(app) == (1, 1)
    assert await gateway.stream_length() == 0  # the replayed intent published nothing either
    # The read that found the marker missing wrote it anew: the store is complete from now on.
    assert await gateway.redis.get(nonce_marker_key(app.key_id)) is not None

    # Requests signed after the loss go through.
    assert (await gateway.send("GET", "/api/pm/balance?currency=THB", key=app, user_id=user)).status == 200
    assert (await gateway.post_intent(app, p2p_body(new_user()), user_id=user)).status == 202
    fresh_rule = await gateway.send("POST", "/admin/limit-rules", key=admin, body=rule_body, user_id=7)
    assert fresh_rule.status == 201


async def test_requests_with_effects_keep_their_nonces_in_postgres(gateway: Gateway) -> None:
    admin = await gateway.key(*ADMIN)
    rule_body = json.dumps(LIMIT_RULE | {"max_amount_minor": 70_000}).encode()
    headers = _signed(admin, "POST", "/admin/limit-rules", rule_body, user_id=7)
    assert (await gateway.raw("POST", "/admin/limit-rules", body=rule_body, headers=headers)).status == 201
    stored = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.request_nonce WHERE api_key_id = $1 AND nonce = $2",
        admin.key_id,
        headers[signing.HEADER_NONCE],
    )
    assert stored == 1
    rules = await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule")
    # Replayed with Redis intact: refused the same way.
    replayed = await gateway.raw("POST", "/admin/limit-rules", body=rule_body, headers=headers)
    assert await error_of(replayed) == (401, "UNAUTHENTICATED")
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule") == rules


async def test_a_read_signed_before_the_store_was_complete_is_refused(gateway: Gateway) -> None:
    app = await gateway.key()
    user = new_user()
    assert (await gateway.send("GET", "/api/pm/balance?currency=THB", key=app, user_id=user)).status == 200
    read_twice = _signed(app, "GET", "/api/pm/balance?currency=THB", user_id=user)
    assert (await gateway.raw("GET", "/api/pm/balance?currency=THB", headers=read_twice)).status == 200
    again = await gateway.raw("GET", "/api/pm/balance?currency=THB", headers=read_twice)
    assert await error_of(again) == (401, "UNAUTHENTICATED")  # a reused nonce, Redis intact
    # As if the store had been lost and found again a minute from now: what is signed before is refused.
    complete_since = await gateway.redis.get(nonce_marker_key(app.key_id))
    await gateway.redis.set(nonce_marker_key(app.key_id), str(int(time.time()) + 60))
    try:
        early = await gateway.send("GET", "/api/pm/balance?currency=THB", key=app, user_id=user)
        assert await error_of(early) == (401, "UNAUTHENTICATED")
        assert "sign it again" in (await early.json())["error"]["message"]
    finally:
        await gateway.redis.set(nonce_marker_key(app.key_id), complete_since)
    assert (await gateway.send("GET", "/api/pm/balance?currency=THB", key=app, user_id=user)).status == 200
