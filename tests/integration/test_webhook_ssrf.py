"""Merchant webhooks cannot make PM post to internal addresses (real PostgreSQL, Valkey and an HTTP
receiver on loopback): a host name registered while it resolved to a public address and moved onto
loopback afterwards (DNS rebinding) is refused at delivery by the resolver the connection uses, and the
receiver is never hit (unless the host is allowed); a stored literal internal address is refused
without a connection; a redirect is a failed delivery and its target is never hit."""

from __future__ import annotations

import itertools
import socket

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from test_outbox import settled_charge

from consumers import outbox
from pm.domain.webhook_policy import AllowedHosts, WebhookRefused
from pm.webhooks.client import check_webhook_url
from tests.support.ports import free_port

SECRET = "merchant-webhook-secret-ssrf-0123456789"
PUBLIC_ADDRESS = "93.184.215.14"
MERCHANT_HOST = "hooks.merchant-shop.com"
_merchants = itertools.count(950_001)


class MovableDns(AbstractResolver):
    """A DNS that answers every name with `address`, which the test changes; records what was asked."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        pass


class InternalService:
    """A receiver on loopback: /hook answers `hook_status` (a redirect to /internal if 3xx); /internal is
    the internal service a merchant would like PM to reach."""

    def __init__(self) -> None:
        self.hook_status = 200
        self.hook_hits = 0
        self.internal_hits = 0
        self.port = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.hook_hits += 1
        if 300 <= self.hook_status < 400:
            location = f"http://127.0.0.1:{self.port}/internal"
            return web.Response(status=self.hook_status, headers={"Location": location})
        return web.Response(status=self.hook_status)

    async def internal(self, request: web.Request) -> web.Response:
        self.internal_hits += 1
        return web.Response(status=200)


@pytest.fixture
async def service():
    got = InternalService()
    app = web.Application()
    app.router.add_route("*", "/hook", got.hook)
    app.router.add_route("*", "/internal", got.internal)
    runner = web.AppRunner(app)
    await runner.setup()
    got.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", got.port).start()
    yield got
    await runner.cleanup()


async def deliver(
    pool, redis, topology, allowed: AllowedHosts, dns: AbstractResolver | None = None
) -> outbox.RoundResult:
    webhooks = outbox.webhook_client(allowed, resolver=dns)
    try:
        return await outbox.deliver_once(pool, outbox.Receivers(webhooks, redis, topology))
    finally:
        await webhooks.close()


async def last_error(pool, merchant: int) -> str:
    return await pool.fetchval("SELECT last_error FROM pm.outbox WHERE merchant_id = $1", merchant)


async def test_a_host_moved_onto_loopback_after_registration_is_refused_at_delivery(
    pool, redis, topology, service
) -> None:
    merchant = next(_merchants)
    url = f"http://{MERCHANT_HOST}:{service.port}/hook"
    dns = MovableDns(PUBLIC_ADDRESS)
    await check_webhook_url(url, AllowedHosts(), resolver=dns)  # public when registered: accepted
    await outbox.set_webhook(pool, merchant, url, SECRET)
    await settled_charge(pool, merchant)

    dns.address = "127.0.0.1"  # the merchant points its name at our loopback
    dns.asked.clear()
    assert await deliver(pool, redis, topology, AllowedHosts(), dns) == outbox.RoundResult(0, 1)
    assert dns.asked == [MERCHANT_HOST]  # the connection's own lookup was the one checked
    assert service.hook_hits == 0
    assert (await last_error(pool, merchant)).startswith(
        f"refused: {MERCHANT_HOST} resolves to 127.0.0.1, which is loopback"
    )
    with pytest.raises(WebhookRefused, match="loopback"):  # and registering it now is refused too
        await check_webhook_url(url, AllowedHosts(), resolver=dns)

    # The same delivery to a host that is allowed although internal reaches the receiver: the refusal
    # above is the policy's, not a test receiver that cannot be reached.
    await pool.execute("UPDATE pm.outbox SET next_attempt_at = now() WHERE merchant_id = $1", merchant)
    assert await deliver(pool, redis, topology, AllowedHosts.parse(MERCHANT_HOST), dns) == outbox.RoundResult(1, 0)
    assert service.hook_hits == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_a_stored_internal_address_is_refused_at_delivery(pool, redis, topology, service, url) -> None:
    """A URL stored before the policy existed (or written by hand) is checked again at delivery."""
    merchant = next(_merchants)
    await outbox.set_webhook(pool, merchant, url.format(port=service.port), SECRET)
    await settled_charge(pool, merchant)
    assert await deliver(pool, redis, topology, AllowedHosts()) == outbox.RoundResult(0, 1)
    assert service.hook_hits == 0
    error = await last_error(pool, merchant)
    assert error.startswith("refused: ") and ("loopback" in error or "link-local" in error), error


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_redirect_is_not_followed_and_its_target_is_never_hit(pool, redis, topology, service, status) -> None:
    merchant = next(_merchants)
    service.hook_status = status
    await outbox.set_webhook(pool, merchant, f"http://127.0.0.1:{service.port}/hook", SECRET)
    await settled_charge(pool, merchant)
    assert await deliver(pool, redis, topology, AllowedHosts.parse("127.0.0.1")) == outbox.RoundResult(0, 1)
    assert (service.hook_hits, service.internal_hits) == (1, 0)
    assert await last_error(pool, merchant) == f"answered {status} (redirects are not followed)"
    # It stays a failed delivery, retried later like any other.
    row = await pool.fetchrow(
        "SELECT attempts, delivered_at, gave_up_at FROM pm.outbox WHERE merchant_id = $1", merchant
    )
    assert (row["attempts"], row["delivered_at"], row["gave_up_at"]) == (1, None, None)
