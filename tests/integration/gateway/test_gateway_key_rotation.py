"""Proves that a rotated-out secret stops working when its grace period ends, in every gateway (issue 10,
item 8), on real PostgreSQL and Valkey: two gateways accept the previous secret during the grace and
refuse it (401) after, even while they still cache the key (the expiry is checked at each verification,
not when the key was read); with no grace the previous secret is refused within the key cache's
second, like a revocation, and the new one works at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.resources import KEYS
from pm.config.constants import API_KEY_CACHE_TTL_S, API_KEY_RECHECK_S
from pm.store import keys
from tests.support.gateway import Gateway, Key, MakeGateway, new_user

GRACE_S = 3


async def _balance_status(gateway: Gateway, key_id: str, secret: str) -> int:
    response = await gateway.send("GET", "/api/pm/balance?currency=THB", key=Key(key_id, secret), user_id=new_user())
    return response.status


async def test_the_previous_secret_works_during_its_grace_and_never_after(make_gateway: MakeGateway) -> None:
    async with make_gateway() as one, make_gateway() as two:
        gateways = (one, two)
        # Keys cached for an hour: only a check at each verification can end the grace on time.
        for gateway in gateways:
            gateway.client.app[KEYS]._ttl_s = 3600.0
        key = await one.key()
        assert [await _balance_status(g, key.key_id, key.secret) for g in gateways] == [200, 200]

        rotated = await keys.rotate_key(one.pool, key.key_id, grace_s=GRACE_S)
        assert rotated is not None
        stored, new_secret = rotated
        assert stored.previous_secret_expires_at is not None
        await asyncio.sleep(API_KEY_RECHECK_S)
        # The new secret works at once (a mismatch re-reads the key), and then both do, in both gateways.
        assert [await _balance_status(g, key.key_id, new_secret) for g in gateways] == [200, 200]
        assert [await _balance_status(g, key.key_id, key.secret) for g in gateways] == [200, 200]

        remaining_s = (stored.previous_secret_expires_at - datetime.now(UTC)).total_seconds()
        assert remaining_s > 0, "the machine was too slow to see the grace at all"
        await asyncio.sleep(remaining_s + 0.3)
        assert [await _balance_status(g, key.key_id, key.secret) for g in gateways] == [401, 401]
        assert [await _balance_status(g, key.key_id, new_secret) for g in gateways] == [200, 200]


async def test_no_grace_refuses_the_previous_secret_like_a_revocation(make_gateway: MakeGateway) -> None:
    async with make_gateway() as one, make_gateway() as two:
        gateways = (one, two)
        key = await one.key()
        assert [await _balance_status(g, key.key_id, key.secret) for g in gateways] == [200, 200]
        rotated = await keys.rotate_key(one.pool, key.key_id, grace_s=0)
        assert rotated is not None
        stored, new_secret = rotated
        assert (stored.previous_secret, stored.previous_secret_expires_at) == (None, None)
        assert stored.active_secrets == (new_secret,)
        await asyncio.sleep(API_KEY_RECHECK_S)
        assert [await _balance_status(g, key.key_id, new_secret) for g in gateways] == [200, 200]
        # Every gateway re-reads a key within its cache's TTL: from then on the old secret is refused.
        await asyncio.sleep(API_KEY_CACHE_TTL_S)
        assert [await _balance_status(g, key.key_id, key.secret) for g in gateways] == [401, 401]
        assert [await _balance_status(g, key.key_id, new_secret) for g in gateways] == [200, 200]
