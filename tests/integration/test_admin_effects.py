"""Proves that admin API changes reach the running stages within a second, without a restart: disabling
the P2P route rejects NO_ROUTE, a better-priority route for an amount range takes those amounts to its
channel, a route replaced to serve THB only refuses a USD intent UNSUPPORTED_CURRENCY (nothing held), a
limit rule created, raised and disabled through the API limits, then stops limiting (a USD rule only USD),
and a fee rule saved with null minimum and maximum fees prices intents with no floor and no ceiling."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import channels
from channels.internal_p2p import InternalP2P
from gateway.app import create_app, runner_options
from ledger import accounts
from pm.client import PMClient
from pm.config.constants import RULES_POLL_INTERVAL_S
from pm.config.settings import Settings
from pm.domain.intent import ErrorCode, Intent, OperationType, State
from pm.store import keys
from tests.support.pipeline import Pipeline, isolated_topology, open_pipeline

P2P = OperationType.P2P_TRANSFER
# A change commits, then every process sees it at its next read that starts a second or more later.
TAKES_EFFECT_S = RULES_POLL_INTERVAL_S + 0.2
_users = iter(range(random.randrange(10**12, 10**14, 10**6), 10**15))


class ExpressP2P(InternalP2P):
    """A second channel for P2P transfers, registered only by this module's tests."""

    name = "P2P_EXPRESS"


@dataclass
class Admin:
    pipeline: Pipeline
    client: PMClient

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return (await self.client.request(method, path, body=body, user_id=9)).body

    async def pay(self, amount_minor: int, sender: int, recipient: int, currency: str = "THB") -> Intent:
        intent = await self.pipeline.submit(P2P, amount_minor, sender, recipient, currency=currency)
        return (await self.pipeline.wait_finished([intent.id]))[intent.id]


@contextlib.asynccontextmanager
async def admin_and_stages(fresh_database: Any, redis_url: str) -> AsyncIterator[Admin]:
    """A pipeline's stages and a gateway on the same fresh database, and an admin client."""
    topology = isolated_topology()
    async with open_pipeline(fresh_database, redis_url, topology) as pipeline:
        database_url = pipeline.database_url
        app = create_app(Settings(), database_url=database_url, redis_url=redis_url, ledger_url=database_url,
                         topology=topology)  # fmt: skip
        server = TestServer(app)
        await server.start_server(**runner_options(Settings()))
        api_key, secret = await keys.create_key(
            pipeline.context.pool, "admin-effects", "admin", operations="ADMIN_ADJUSTMENT"
        )
        async with (
            TestClient(server) as http,
            PMClient(str(http.make_url("")).rstrip("/"), api_key.key_id, secret) as client,
            pipeline.stages(),
        ):
            yield Admin(pipeline, client)


async def test_route_edits_take_effect_within_a_second(fresh_database, redis_url, monkeypatch) -> None:
    monkeypatch.setitem(channels.REGISTRY, ExpressP2P.name, ExpressP2P())
    alice, bob = next(_users), next(_users)
    async with admin_and_stages(fresh_database, redis_url) as admin:
        await admin.pipeline.wait_finished([(await admin.pipeline.fund(alice, 100_000)).id])
        assert (await admin.pay(2_000, alice, bob)).channel == "INTERNAL_P2P"  # the routes are loaded

        express = await admin.call("POST", "/admin/routes", {
            "operation_type": "P2P_TRANSFER", "currencies": ["THB"], "min_amount_minor": 1_000,
            "max_amount_minor": 5_000, "channel": "P2P_EXPRESS", "priority": 10, "enabled": True,
        })  # fmt: skip
        await asyncio.sleep(TAKES_EFFECT_S)
        in_range, below = await admin.pay(2_000, alice, bob), await admin.pay(999, alice, bob)
        assert (in_range.state, in_range.channel) == (State.SETTLED, "P2P_EXPRESS")
        assert (below.state, below.channel) == (State.SETTLED, "INTERNAL_P2P")

        routes = (await admin.call("GET", "/admin/routes"))["items"]
        [default] = [r for r in routes if r["channel"] == "INTERNAL_P2P"]
        await admin.call("DELETE", f"/admin/routes/{default['id']}")
        await asyncio.sleep(TAKES_EFFECT_S)
        refused, still_express = await admin.pay(6_000, alice, bob), await admin.pay(1_500, alice, bob)
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.NO_ROUTE)
        assert (still_express.state, still_express.channel) == (State.SETTLED, "P2P_EXPRESS")

        await admin.call("DELETE", f"/admin/routes/{express['id']}")
        await asyncio.sleep(TAKES_EFFECT_S)
        assert (await admin.pay(1_500, alice, bob)).error_code == ErrorCode.NO_ROUTE


@pytest.mark.parametrize("period", ["daily", "monthly"])
async def test_limit_rule_edits_take_effect_within_a_second(fresh_database, redis_url, period) -> None:
    alice, bob = next(_users), next(_users)
    async with admin_and_stages(fresh_database, redis_url) as admin:
        await admin.pipeline.wait_finished([(await admin.pipeline.fund(alice, 100_000)).id])
        assert (await admin.pay(1_000, alice, bob)).state == State.SETTLED  # the (no) rules are loaded

        body = {"currency": "THB", "operation_type": None, "tag": None, "period": period, "max_amount_minor": 2_000,
                "max_count": None}  # fmt: skip
        rule = await admin.call("POST", "/admin/limit-rules", body)
        await asyncio.sleep(TAKES_EFFECT_S)
        refused = await admin.pay(1_500, alice, bob)  # 1,000 already paid today counts (rebuilt from PostgreSQL)
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
        assert refused.error_message is not None and "1000 of 2000 minor units remain" in refused.error_message

        await admin.call("PUT", f"/admin/limit-rules/{rule['id']}", body | {"max_amount_minor": 5_000})
        await asyncio.sleep(TAKES_EFFECT_S)
        assert (await admin.pay(1_500, alice, bob)).state == State.SETTLED  # 2,500 of 5,000
        assert (await admin.pay(3_000, alice, bob)).error_code == ErrorCode.LIMIT_EXCEEDED

        await admin.call("DELETE", f"/admin/limit-rules/{rule['id']}")
        await asyncio.sleep(TAKES_EFFECT_S)
        assert (await admin.pay(3_000, alice, bob)).state == State.SETTLED


async def test_a_route_replaced_to_serve_thb_only_refuses_usd_within_a_second(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with admin_and_stages(fresh_database, redis_url) as admin:
        pipeline = admin.pipeline
        funded = [await pipeline.fund(alice, 10_000, "USD"), await pipeline.fund(alice, 10_000, "THB")]
        await pipeline.wait_finished([intent.id for intent in funded])
        assert (await admin.pay(1_000, alice, bob, "USD")).state == State.SETTLED  # the default route serves USD

        [default] = [r for r in (await admin.call("GET", "/admin/routes"))["items"] if r["channel"] == "INTERNAL_P2P"]
        assert default["currencies"] == ["EUR", "THB", "USD"]  # as 0017 migrated it
        body = {name: default[name] for name in ("operation_type", "min_amount_minor", "max_amount_minor", "channel",
                                                 "priority", "enabled")}  # fmt: skip
        replaced = await admin.call("PUT", f"/admin/routes/{default['id']}", body | {"currencies": ["THB"]})
        assert (replaced["currencies"], replaced["version"]) == (["THB"], default["version"] + 1)
        await asyncio.sleep(TAKES_EFFECT_S)
        refused, baht = await admin.pay(1_000, alice, bob, "USD"), await admin.pay(1_000, alice, bob, "THB")
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.UNSUPPORTED_CURRENCY)
        assert refused.error_message is not None and "serves USD; routes serve THB" in refused.error_message
        assert refused.channel is None  # refused at validation: never routed, nothing held
        assert baht.state == State.SETTLED
        assert await pipeline.balance(alice, "USD") == (9_000, 0) and await pipeline.balance(bob, "USD") == (1_000, 0)
        assert await pipeline.balance(alice, "THB") == (9_000, 0) and await pipeline.balance(bob, "THB") == (1_000, 0)
        assert (await pipeline.check()).ok


async def test_a_usd_limit_rule_made_through_the_api_limits_usd_only(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with admin_and_stages(fresh_database, redis_url) as admin:
        pipeline = admin.pipeline
        funded = [await pipeline.fund(alice, 10_000, "USD"), await pipeline.fund(alice, 10_000, "THB")]
        await pipeline.wait_finished([intent.id for intent in funded])
        assert (await admin.pay(1_000, alice, bob, "USD")).state == State.SETTLED  # the (no) rules are loaded
        body = {"currency": "USD", "operation_type": "P2P_TRANSFER", "tag": None, "period": "daily",
                "max_amount_minor": 2_000, "max_count": None}  # fmt: skip
        rule = await admin.call("POST", "/admin/limit-rules", body)
        assert rule["currency"] == "USD"
        await asyncio.sleep(TAKES_EFFECT_S)
        refused = await admin.pay(1_500, alice, bob, "USD")  # 1,000 USD cents paid today count
        assert (refused.state, refused.error_code) == (State.REJECTED, ErrorCode.LIMIT_EXCEEDED)
        assert refused.error_message is not None and "daily USD limit" in refused.error_message
        assert "1000 of 2000 minor units remain" in refused.error_message
        # Satang are not cents: 5,000 THB minor units pass a 2,000 USD cap.
        assert (await admin.pay(5_000, alice, bob, "THB")).state == State.SETTLED
        assert (await admin.pay(1_000, alice, bob, "USD")).state == State.SETTLED  # 2,000 of 2,000
        assert await pipeline.balance(alice, "USD") == (8_000, 0) and await pipeline.balance(alice, "THB") == (5_000, 0)
        assert (await pipeline.check()).ok


async def test_a_fee_rule_saved_with_null_min_and_max_prices_intents_in_the_pipeline(fresh_database, redis_url) -> None:
    alice, bob = next(_users), next(_users)
    async with admin_and_stages(fresh_database, redis_url) as admin:
        pipeline = admin.pipeline
        await pipeline.wait_finished([(await pipeline.fund(alice, 1_000_000)).id])
        rule = await admin.call("POST", "/admin/fee-rules", {
            "name": "one percent, no floor, no ceiling", "currency": "THB", "operation_type": "P2P_TRANSFER",
            "channel": None,
            "condition": f"sender_id == {alice}", "amount": "amount / 100", "kind": "PRE", "priority": 10,
            "min_fee_minor": None, "max_fee_minor": None, "valid_from": None, "valid_to": None, "enabled": True,
        })  # fmt: skip
        assert (rule["min_fee_minor"], rule["max_fee_minor"]) == (0, None)
        await asyncio.sleep(TAKES_EFFECT_S)
        large, small = await admin.pay(250_000, alice, bob), await admin.pay(50, alice, bob)
        assert (large.state, large.fee_pre_minor, large.fee_post_minor) == (State.SETTLED, 2_500, 0)
        assert [(r["id"], r["version"], r["fee_minor"]) for r in large.fee_rules] == [(rule["id"], 1, 2_500)]
        assert (small.state, small.fee_pre_minor) == (State.SETTLED, 0)  # null minimum: 0, not a floor
        assert await pipeline.balance(alice) == (1_000_000 - 252_500 - 50, 0)
        assert await pipeline.balance(bob) == (250_050, 0)
        [fees] = await pipeline.context.ledger.lookup_accounts([accounts.fees("THB").id])
        assert fees.credits_posted - fees.debits_posted == 2_500
        assert (await pipeline.check()).ok
