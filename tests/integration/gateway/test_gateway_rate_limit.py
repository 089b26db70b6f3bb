"""Per-key rates and slow bodies at the gateway, on real PostgreSQL and Valkey: a key's signed requests
beyond its rate (`requests_per_s`) are answered 429 RATE_LIMITED with Retry-After and counted in
`pm_rate_limited_total`, without a PostgreSQL connection or a nonce being used (so the same signed request
passes later), while another key is served and a bad signature spends none of a key's budget; a body that
trickles in slower than PM_REQUEST_BODY_TIMEOUT_MS gets 408 REQUEST_TIMEOUT and a closed connection;
`pm keys create --rate`, `set-rate` and `list` keep and show the rate, and a bad rate exits 2, nothing made."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg.pool
import pytest
from prometheus_client import REGISTRY

from gateway.auth import nonce_key
from gateway.resources import KEYS
from pm.config.constants import API_KEY_CACHE_TTL_S, GATEWAY_LINGERING_TIME_S
from pm.domain import signing
from pm.store import keys
from pm.store.keys import SCOPE_BALANCE_READ
from tests.integration.gateway.test_gateway_cli_keys import run_pm
from tests.support.gateway import Gateway, Key, MakeGateway, error_of, new_user, p2p_body

BALANCE = "/api/pm/balance?currency=THB"


def _limited_count(key: Key) -> float:
    return REGISTRY.get_sample_value("pm_rate_limited_total", {"key_id": key.key_id}) or 0.0


@contextlib.contextmanager
def _counting_pool_acquires() -> Iterator[list[int]]:
    """Counts every connection taken from any asyncpg pool of this process (the gateway's and the ledger's)."""
    counted = [0]
    original = asyncpg.pool.Pool.acquire

    def acquire(self: asyncpg.pool.Pool, *, timeout: float | None = None):  # type: ignore[no-untyped-def]
        counted[0] += 1
        return original(self, timeout=timeout)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncpg.pool.Pool, "acquire", acquire)
        yield counted


async def test_beyond_its_rate_a_key_gets_429_without_touching_postgres(make_gateway: MakeGateway) -> None:
    async with make_gateway() as gateway:
        # The key cache re-reads a key every second; on a slow machine that one read could fall among the
        # refused requests below, so this gateway caches keys for longer (the cache is not under test here).
        gateway.client.app[KEYS]._ttl_s = 60.0
        await _refused_without_postgres(gateway)


async def _refused_without_postgres(gateway: Gateway) -> None:
    key = await gateway.key(requests_per_s=3)
    other = await gateway.key(requests_per_s=3)
    user = new_user()
    before = _limited_count(key)
    statuses = [(await gateway.send("GET", BALANCE, key=key, user_id=user)).status for _ in range(3)]
    assert statuses == [200, 200, 200]  # a burst of its rate passes; the key is in the gateway's cache now
    stream_before = await gateway.stream_length()
    with _counting_pool_acquires() as acquires:
        refused = await gateway.post_intent(key, p2p_body(new_user()), user_id=user)
        read_refused = await gateway.send("GET", BALANCE, key=key, user_id=user)
        # A DELETE's nonce would be claimed in PostgreSQL (and then refused 403: the key is no admin).
        delete_refused = await gateway.send("DELETE", "/admin/routes/1", key=key, user_id=user)
    assert acquires[0] == 0
    assert await error_of(refused) == (429, "RATE_LIMITED")
    assert await error_of(read_refused) == (429, "RATE_LIMITED")
    assert await error_of(delete_refused) == (429, "RATE_LIMITED")
    assert int(refused.headers["Retry-After"]) >= 1
    assert _limited_count(key) == before + 3
    assert await gateway.writes_by(key) == (0, 0) and await gateway.stream_length() == stream_before
    # Another key, just as busy, is not held back by the first one's bucket.
    assert [(await gateway.send("GET", BALANCE, key=other, user_id=user)).status for _ in range(3)] == [200] * 3
    assert _limited_count(other) == 0


async def test_a_refused_request_keeps_its_nonce_and_passes_as_it_was_after_retry_after(gateway: Gateway) -> None:
    key = await gateway.key(requests_per_s=1)
    user = new_user()
    assert (await gateway.post_intent(key, p2p_body(new_user()), user_id=user)).status == 202
    body = p2p_body(new_user())
    headers = signing.sign_headers(
        key_id=key.key_id, secret=key.secret, method="POST", path="/intents", body=body, user_id=user,
        idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    refused = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert await error_of(refused) == (429, "RATE_LIMITED")
    nonce = headers[signing.HEADER_NONCE]
    assert not await gateway.pool.fetchval("SELECT count(*) FROM pm.request_nonce WHERE nonce = $1", nonce)
    assert not await gateway.redis.exists(nonce_key(key.key_id, nonce))
    await asyncio.sleep(int(refused.headers["Retry-After"]))
    again = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert again.status == 202
    assert await gateway.writes_by(key) == (2, 2)


async def test_bad_signatures_spend_none_of_a_keys_budget(gateway: Gateway) -> None:
    key = await gateway.key(SCOPE_BALANCE_READ, requests_per_s=2)
    user = new_user()
    forged = Key(key.key_id, "not-the-secret")
    for _ in range(5):
        assert await error_of(await gateway.send("GET", BALANCE, key=forged, user_id=user)) == (401, "UNAUTHENTICATED")
    assert [(await gateway.send("GET", BALANCE, key=key, user_id=user)).status for _ in range(2)] == [200, 200]


async def test_a_changed_rate_applies_within_the_key_cache_ttl(gateway: Gateway) -> None:
    key = await gateway.key(SCOPE_BALANCE_READ, requests_per_s=1)
    user = new_user()
    assert (await gateway.send("GET", BALANCE, key=key, user_id=user)).status == 200
    assert (await gateway.send("GET", BALANCE, key=key, user_id=user)).status == 429
    changed = await keys.set_rate(gateway.pool, key.key_id, 50)
    assert changed is not None and changed.requests_per_s == 50
    await asyncio.sleep(API_KEY_CACHE_TTL_S + 0.1)
    statuses = [(await gateway.send("GET", BALANCE, key=key, user_id=user)).status for _ in range(20)]
    assert statuses == [200] * 20


@contextlib.asynccontextmanager
async def _connection(gateway: Gateway) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    server = gateway.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.close()


def _request_head(key: Key, body: bytes, user: int) -> bytes:
    headers = signing.sign_headers(
        key_id=key.key_id, secret=key.secret, method="POST", path="/intents", body=body, user_id=user,
        idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    lines = ["POST /intents HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_body_trickling_in_too_slowly_gets_408_and_a_closed_connection(make_gateway: MakeGateway) -> None:
    async with make_gateway(request_body_timeout_ms=300) as gateway:
        key = await gateway.key()
        body = p2p_body(new_user())
        async with _connection(gateway) as (reader, writer):
            writer.write(_request_head(key, body, new_user()))
            started_s = time.monotonic()
            answer = b""
            for byte in body:  # a byte every 50 ms: the whole body would take several seconds
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(65_536), 0.05)
                if answer:
                    break
            answered_s = time.monotonic() - started_s
            # Then the gateway drops what still comes for its lingering time and closes: read() ends.
            answer += await asyncio.wait_for(reader.read(), GATEWAY_LINGERING_TIME_S + 3)
            closed_s = time.monotonic() - started_s
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert b"connection: close" in head.lower()
        assert json.loads(payload)["error"]["code"] == "REQUEST_TIMEOUT"
        assert 0.3 <= answered_s < 2.0 and closed_s < answered_s + GATEWAY_LINGERING_TIME_S + 1
        assert await gateway.writes_by(key) == (0, 0)

        # The same request sent at an ordinary pace is accepted.
        async with _connection(gateway) as (reader, writer):
            writer.write(_request_head(key, body, new_user()) + body)
            status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 202 "), status_line


async def test_pm_keys_create_with_a_rate_set_rate_and_list(gateway: Gateway, postgres_url: str) -> None:
    created = await run_pm(
        postgres_url, "create", "slow-caller", "--scopes", "balance:read", "--rate", "7", "--json"
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert issued["requests_per_s"] == 7
    changed = await run_pm(postgres_url, "set-rate", issued["key_id"], "12")
    assert changed.returncode == 0, changed.stderr
    listed = await run_pm(postgres_url, "list", "--json")
    [entry] = [entry for entry in json.loads(listed.stdout) if entry["key_id"] == issued["key_id"]]
    assert entry["requests_per_s"] == 12
    plain = await run_pm(postgres_url, "list")
    [line] = [line for line in plain.stdout.splitlines() if line.startswith(issued["key_id"])]
    assert "rate=12/s" in line

    keys_before = await gateway.pool.fetchval("SELECT count(*) FROM pm.api_key")
    for rate in ("0", "100001", "-3"):
        refused = await run_pm(postgres_url, "create", "bad-rate", "--scopes", "balance:read", "--rate", rate)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "rate" in refused.stderr
    bad_change = await run_pm(postgres_url, "set-rate", issued["key_id"], "0")
    assert bad_change.returncode == 2 and len(bad_change.stderr.strip().splitlines()) == 1
    unknown = await run_pm(postgres_url, "set-rate", "pmk_doesnotexist00", "5")
    assert unknown.returncode == 1
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.api_key") == keys_before
    stored = await keys.lookup_key(gateway.pool, issued["key_id"])
    assert stored is not None and stored.requests_per_s == 12
