"""The form of a merchant's webhook URL, parsed by yarl exactly as aiohttp will connect to it (the address
rules are the core's: pm/domain/webhook_policy.py).

    target = parse_target(url)    # WebhookRefused with the reason; addresses are checked on connect
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from pm.domain.webhook_policy import (
    HOST_NAME,
    NUMERIC_LABEL,
    URL_LENGTH_MAX,
    IPAddress,
    WebhookRefused,
    normalize_host,
    parse_address,
)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A webhook URL that passed the form checks: where to resolve and connect."""

    url: URL
    host: str  # normalized, as resolved (IDNA-encoded; an IPv6 address without brackets)
    port: int
    address: IPAddress | None  # the host when the URL names an address (nothing to resolve)


def parse_target(url: str) -> WebhookTarget:
    """Check the URL's form; raises WebhookRefused with the reason. Addresses are checked separately."""
    if len(url) > URL_LENGTH_MAX or not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookRefused(f"the URL must be at most {URL_LENGTH_MAX} printable ASCII characters, no spaces")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError as exc:
        raise WebhookRefused(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise WebhookRefused("the URL must be http(s)://HOST/...")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise WebhookRefused("the URL must not carry a user name or password (PM signs every webhook)")
    if port is None or not 1 <= port <= 65_535:
        raise WebhookRefused("the URL's port must be from 1 to 65535")
    host = normalize_host(parsed.raw_host)
    address = parse_address(host)
    if address is None and not HOST_NAME.fullmatch(host):
        raise WebhookRefused(f"{host!r} is not a host name or an IP address")
    if address is None and NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise WebhookRefused(f"{host!r} is not a canonical IP address (write it as a.b.c.d)")
    return WebhookTarget(parsed, host, port, address)
