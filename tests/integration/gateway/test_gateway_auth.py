"""HMAC at the gateway (DESIGN.md §7) on real PostgreSQL and Valkey: every way a signature can be wrong
(tampered body, path, query, X-User-Id or Idempotency-Key; stale or future timestamp; reused nonce;
unknown, revoked or under-scoped key; non-ASCII bytes) is refused with 401/403 and writes nothing (no
intent, no idempotency claim, no stream entry, and before the signature is verified not even a nonce),
while a rotated key works with both secrets at once and a revoked one is refused within a second."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from gateway.auth import nonce_key
from pm.config.constants import API_KEY_CACHE_TTL_S, API_KEY_RECHECK_S
from pm.domain import signing
from pm.store import keys
from pm.store.keys import SCOPE_BALANCE_READ, SCOPE_INTENTS_READ
from tests.support.gateway import Gateway, Key, error_of, new_user, p2p_body


def _signed_p2p(key: Key, sender: int, recipient: int, **overrides: object) -> tuple[bytes, dict[str, str]]:
    body = p2p_body(recipient)
    arguments: dict[str, object] = {
        "key_id": key.key_id,
        "secret": key.secret,
        "method": "POST",
        "path": "/intents",
        "body": body,
        "user_id": sender,
        "idempotency_key": uuid.uuid4().hex,
    }
    arguments.update(overrides)
    return body, signing.sign_headers(**arguments)  # type: ignore[arg-type]


async def _assert_nothing_written(gateway: Gateway, key: Key, stream_before: int) -> None:
    assert await gateway.writes_by(key) == (0, 0)
    assert await gateway.stream_length() == stream_before


async def _nonce_stored(gateway: Gateway, key: Key, headers: dict[str, str]) -> bool:
    """Whether the request's nonce was claimed: in PostgreSQL (requests with effects) or Redis (reads)."""
    nonce = headers[signing.HEADER_NONCE]
    in_postgres = await gateway.pool.fetchval(
        "SELECT count(*) FROM pm.request_nonce WHERE api_key_id = $1 AND nonce = $2", key.key_id, nonce
    )
    return bool(in_postgres or await gateway.redis.exists(nonce_key(key.key_id, nonce)))


async def test_a_correctly_signed_request_passes(gateway: Gateway) -> None:
    key = await gateway.key()
    body, headers = _signed_p2p(key, new_user(), new_user())
    response = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert response.status == 202
    assert await _nonce_stored(gateway, key, headers)


TAMPERINGS = {
    "body": lambda body, headers: (body.replace(b"10000", b"99999"), headers),
    "path": lambda body, headers: (body, headers),  # sent to another path, below
    "user": lambda body, headers: (body, {**headers, "X-User-Id": str(new_user())}),
    "idempotency key": lambda body, headers: (body, {**headers, "Idempotency-Key": "another"}),
    "signature": lambda body, headers: (body, {**headers, "X-PM-Signature": "v1=" + "0" * 64}),
    "signature version": lambda body, headers: (
        body,
        {**headers, "X-PM-Signature": headers["X-PM-Signature"].replace("v1", "v2")},
    ),
    "key id": lambda body, headers: (body, {**headers, "X-PM-Key-Id": "pmk_0000000000000000"}),
    "missing header": lambda body, headers: (body, {k: v for k, v in headers.items() if k != "X-PM-Nonce"}),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_tampered_requests_are_401_and_write_nothing(gateway: Gateway, tampering: str) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    signed_path = "/intents/" if tampering == "path" else "/intents"
    body, headers = _signed_p2p(key, new_user(), new_user(), path=signed_path)
    body, headers = TAMPERINGS[tampering](body, headers)
    response = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert await error_of(response) == (401, "UNAUTHENTICATED")
    await _assert_nothing_written(gateway, key, before)
    if signing.HEADER_NONCE in headers:
        assert not await _nonce_stored(gateway, key, headers)


async def test_tampered_query_is_401(gateway: Gateway) -> None:
    key = await gateway.key()
    user = new_user()
    headers = signing.sign_headers(
        key_id=key.key_id, secret=key.secret, method="GET", path="/api/pm/history", raw_query="limit=5", user_id=user
    )
    assert (await gateway.raw("GET", "/api/pm/history?limit=6", headers=headers)).status == 401
    reordered = signing.sign_headers(
        key_id=key.key_id,
        secret=key.secret,
        method="GET",
        path="/api/pm/balance",
        raw_query="currency=THB&x=1",
        user_id=user,
    )
    # The query is signed sorted, so the order the pairs are sent in does not matter.
    assert (await gateway.raw("GET", "/api/pm/balance?x=1&currency=THB", headers=reordered)).status == 200


@pytest.mark.parametrize("skew_s", [-301, 301, -10_000])
async def test_stale_and_future_timestamps_are_401(gateway: Gateway, skew_s: int) -> None:
    key = await gateway.key()
    before = await gateway.stream_length()
    body, headers = _signed_p2p(key, new_user(), new_user(), timestamp=int(time.time()) + skew_s)
    response = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert await error_of(response) == (401, "UNAUTHENTICATED")
    await _assert_nothing_written(gateway, key, before)
    assert not await _nonce_stored(gateway, key, headers)


async def test_a_reused_nonce_is_401_and_writes_nothing_more(gateway: Gateway) -> None:
    key = await gateway.key()
    body, headers = _signed_p2p(key, new_user(), new_user())
    assert (await gateway.raw("POST", "/intents", body=body, headers=headers)).status == 202
    before = await gateway.stream_length()
    replayed = await gateway.raw("POST", "/intents", body=body, headers=headers)
    assert await error_of(replayed) == (401, "UNAUTHENTICATED")
    assert await gateway.writes_by(key) == (1, 1)
    assert await gateway.stream_length() == before


async def test_missing_scope_is_403_and_writes_nothing(gateway: Gateway) -> None:
    reader = await gateway.key(SCOPE_INTENTS_READ, SCOPE_BALANCE_READ)
    before = await gateway.stream_length()
    response = await gateway.post_intent(reader, p2p_body(new_user()), user_id=new_user())
    assert await error_of(response) == (403, "FORBIDDEN")
    await _assert_nothing_written(gateway, reader, before)
    writer = await gateway.key("intents:write")
    balance = await gateway.send("GET", "/api/pm/balance?currency=THB", key=writer, user_id=new_user())
    assert await error_of(balance) == (403, "FORBIDDEN")


async def test_unsigned_requests_are_401_but_public_routes_need_no_signature(gateway: Gateway) -> None:
    for path in ("/intents/" + str(uuid.uuid4()), "/api/pm/balance?currency=THB", "/no/such/route"):
        assert await error_of(await gateway.raw("GET", path)) == (401, "UNAUTHENTICATED")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await gateway.raw("GET", path)).status == 200, path
    key = await gateway.key()
    assert await error_of(await gateway.send("GET", "/no/such/route", key=key)) == (404, "NOT_FOUND")


async def test_revoked_key_is_refused_within_the_cache_ttl(gateway: Gateway) -> None:
    key = await gateway.key()
    user = new_user()
    assert (await gateway.send("GET", "/api/pm/balance?currency=THB", key=key, user_id=user)).status == 200
    assert await keys.revoke_key(gateway.pool, key.key_id)
    await asyncio.sleep(API_KEY_CACHE_TTL_S)
    before = await gateway.stream_length()
    refused = await gateway.post_intent(key, p2p_body(new_user()), user_id=user)
    assert await error_of(refused) == (401, "UNAUTHENTICATED")
    await _assert_nothing_written(gateway, key, before)


async def test_rotation_keeps_both_secrets_until_the_next_rotation(gateway: Gateway) -> None:
    key = await gateway.key()
    user = new_user()

    async def balance_status(secret: str) -> int:
        response = await gateway.send("GET", "/api/pm/balance?currency=THB", key=Key(key.key_id, secret), user_id=user)
        return response.status

    assert await balance_status(key.secret) == 200
    rotated = await keys.rotate_key(gateway.pool, key.key_id)
    assert rotated is not None
    _, second_secret = rotated
    await asyncio.sleep(API_KEY_RECHECK_S)
    assert (await balance_status(key.secret), await balance_status(second_secret)) == (200, 200)

    rotated_again = await keys.rotate_key(gateway.pool, key.key_id)
    assert rotated_again is not None
    _, third_secret = rotated_again
    await asyncio.sleep(API_KEY_RECHECK_S)
    assert await balance_status(third_secret) == 200
    # The oldest secret is dropped like a revocation: within the cache's TTL.
    await asyncio.sleep(API_KEY_CACHE_TTL_S)
    assert [await balance_status(secret) for secret in (key.secret, second_secret, third_secret)] == [401, 200, 200]


@pytest.mark.parametrize(
    "header",
    [b"X-PM-Timestamp: 1\xc2\xb2", b"X-User-Id: \xff", b"Idempotency-Key: \xe0\xb8\x81", b"X-PM-Signature: v1=\xff"],
)
async def test_non_ascii_in_signed_headers_is_401_not_a_crash(gateway: Gateway, header: bytes) -> None:
    key = await gateway.key()
    body, headers = _signed_p2p(key, new_user(), new_user())
    name = header.split(b":")[0].decode()
    lines = [f"{k}: {v}".encode() for k, v in headers.items() if k != name] + [header]
    request = (
        b"POST /intents HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + b"\r\n".join(lines)
        + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    reader, writer = await asyncio.open_connection(gateway.client.host, gateway.client.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 401 Unauthorized", response[:300]
    assert b'"code":"UNAUTHENTICATED"' in rest
    assert await gateway.writes_by(key) == (0, 0)


async def test_a_merchant_key_holding_admin_opens_no_admin_endpoint(gateway: Gateway) -> None:
    """`pm keys create` refuses a merchant key with `admin`; one that holds it anyway (a row edited by hand, or
    made before the rule) is still no operator's: 403 on the admin API and nothing written (issue 10)."""
    shop = await gateway.key("intents:write", merchant_id=new_user())
    await gateway.pool.execute(
        "UPDATE pm.api_key SET scopes = ARRAY['admin', 'intents:write'] WHERE key_id = $1", shop.key_id
    )
    await asyncio.sleep(API_KEY_CACHE_TTL_S + 0.1)  # the gateway's key cache reads the row again
    rule = {"currency": "THB", "operation_type": "P2P_TRANSFER", "tag": None, "period": "daily", "max_amount_minor": 1,
            "max_count": None}  # fmt: skip
    before = await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule")
    answer = await gateway.send("POST", "/admin/limit-rules", key=shop, body=json.dumps(rule).encode(), user_id=7)
    assert await error_of(answer) == (403, "FORBIDDEN")
    assert await gateway.pool.fetchval("SELECT count(*) FROM pm.limit_rule") == before
    listed = await gateway.send("GET", "/admin/fee-rules", key=shop, user_id=7)
    assert listed.status == 403
