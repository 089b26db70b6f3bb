"""The HTTP client of merchant webhooks: it connects only where pm/domain/webhook_policy.py allows, and never
follows a redirect.

The policy is applied to the addresses the connection uses, not to an earlier lookup: `PolicyResolver`
wraps aiohttp's resolver, and the connector connects only to the addresses it returns, so a DNS answer
that changes between a check and the connect (DNS rebinding, or a merchant who moved its name onto an
internal address after registering) cannot slip past. aiohttp resolves no literal IP address (it
connects to it as written), so `WebhookClient.post` checks those itself; nothing to rebind there.

A 3xx answer is a failed delivery (retried like any failure, the status in `last_error`): following it
would let the merchant's server send PM's POST anywhere, internal addresses included.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from pm.domain.webhook_policy import AllowedHosts, WebhookRefused, check_addresses
from pm.webhooks.policy import WebhookTarget, parse_target

# `pm merchants webhook set` waits this long for the host's addresses.
RESOLVE_TIMEOUT_S = 10.0


class WebhookAddressRefused(OSError):
    """A host resolved to an address the policy refuses. An OSError, because aiohttp turns a resolver's
    OSError into ClientConnectorDNSError, which the delivery reports as a failed attempt."""


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver (getaddrinfo in a thread, as `webhook set` sees it), refusing a host with any
    address the policy refuses instead of returning its addresses."""

    def __init__(self, allowed: AllowedHosts, inner: AbstractResolver | None = None) -> None:
        self._allowed = allowed
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            check_addresses(host, [result["host"] for result in results], self._allowed)
        except WebhookRefused as exc:
            raise WebhookAddressRefused(str(exc)) from None
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_webhook_url(
    url: str, allowed: AllowedHosts, resolver: AbstractResolver | None = None, timeout_s: float = RESOLVE_TIMEOUT_S
) -> WebhookTarget:
    """What `pm merchants webhook set` checks before it stores a URL: its form, and the addresses its host
    resolves to now. Raises WebhookRefused with the reason (a host that does not resolve included)."""
    target = parse_target(url)
    if target.address is not None:
        check_addresses(target.host, [str(target.address)], allowed)
        return target
    policy = PolicyResolver(allowed, resolver)
    try:
        await asyncio.wait_for(policy.resolve(target.host, target.port, socket.AF_UNSPEC), timeout_s)
    except WebhookAddressRefused as exc:
        raise WebhookRefused(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise WebhookRefused(f"{target.host} does not resolve ({exc or 'timed out'})") from None
    finally:
        await policy.close()
    return target


class WebhookClient:
    """POSTs webhooks within the policy; one per outbox worker (its connection pool)."""

    def __init__(
        self,
        allowed: AllowedHosts,
        timeout_s: float,
        connections_max: int,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.allowed = allowed
        # No DNS cache: every new connection asks the policy resolver (a reused keep-alive connection
        # goes to an address that was checked when it was opened).
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(allowed, resolver), use_dns_cache=False, limit=connections_max
        )
        # trust_env=False: no HTTP(S)_PROXY from the environment; through a proxy, the policy would see
        # the proxy's address instead of the merchant's.
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False
        )

    async def post(self, url: str, body: bytes, headers: dict[str, Any]) -> str | None:
        """None when the receiver answered 2xx; else why not (refused, the status, the error)."""
        try:
            target = parse_target(url)
            if target.address is not None:
                check_addresses(target.host, [str(target.address)], self.allowed)
        except WebhookRefused as exc:
            return f"refused: {exc}"
        try:
            async with self.session.post(target.url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                if 300 <= response.status < 400:
                    return f"answered {response.status} (redirects are not followed)"
                return f"answered {response.status}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, WebhookAddressRefused):
                return f"refused: {exc.os_error}"
            return repr(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return repr(exc)

    async def close(self) -> None:
        await self.session.close()
