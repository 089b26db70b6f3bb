"""Where merchant webhooks may go: the URL forms and the addresses PM will connect to (pure: no I/O).

A merchant chooses its webhook URL, and PM's outbox worker POSTs to it from inside our network, so a
careless policy lets a merchant make PM post to internal services (the database, Redis, a cloud's
metadata endpoint at 169.254.169.254): server-side request forgery. The rules, checked when the URL is
registered (`pm merchants webhook set`) and again at every delivery (pm/webhooks/client.py), on the
addresses the connection actually uses:

- the URL is `http(s)://HOST[:PORT]/...` (https is the merchant's choice: the body is signed, not
  secret); any port from 1 to 65535 (only public addresses are reachable, so a port reaches nothing
  internal);
- no user name or password in the URL: PM signs every webhook instead, and `user@host` is the classic
  way to disguise the host from a reader;
- the host is a DNS name or a canonical IP address (`127.1`, `2130706433`, `0x7f.1` are refused: the
  resolver would turn them into addresses no reader expects);
- every address the host resolves to is globally routable: loopback, private (RFC 1918, fc00::/7,
  fec0::/10), link-local (169.254.0.0/16 with the metadata endpoints, fe80::/10), multicast,
  unspecified ("this network" 0.0.0.0/8, ::), shared (100.64.0.0/10), reserved (240.0.0.0/4,
  broadcast) and every other special-purpose block (`ipaddress`'s `is_global`) are refused; an IPv6
  address that embeds an IPv4 one (IPv4-mapped ::ffff:0:0/96, 6to4 2002::/16, NAT64 64:ff9b::/96) is
  judged by the IPv4 address it leads to. One refused address refuses the host: a name that answers
  with a public and an internal address is not trusted with either.

`AllowedHosts` (PM_WEBHOOK_ALLOWED_HOSTS) lets a development receiver on an internal address work: a
name entry allows that host name whatever it resolves to; an address entry allows that address however
the URL names it. Production leaves it empty.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

URL_LENGTH_MAX = 2_000  # the column's CHECK (sql/0008_outbox.sql)
# A host name as DNS spells it (underscores too: some internal names have them), lower case.
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")
# No top-level domain is numeric: a host whose last label looks like a number is meant as an address.
NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class AddressClass(StrEnum):
    """Why an address is refused; the value is what a person reads."""

    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    SHARED = "shared address space (100.64.0.0/10)"
    PRIVATE = "private"
    RESERVED = "reserved"
    NOT_GLOBAL = "not globally routable"


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
# Special-purpose blocks the Python 3.11 `is_global` still calls global (fixed in later versions).
_NOT_GLOBAL = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "::/96"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to (IPv4-mapped, 6to4, NAT64), else None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def classify(address: IPAddress) -> AddressClass | None:
    """Why PM must not connect to `address`, or None when it is a public (globally routable) one."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return classify(inner)
    if address.is_unspecified or address in _THIS_NETWORK:
        return AddressClass.UNSPECIFIED  # connecting to 0.0.0.0 reaches this machine on Linux
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if address in _SHARED:
        return AddressClass.SHARED
    if any(address in network for network in _PRIVATE):
        return AddressClass.PRIVATE
    if address.is_reserved:
        return AddressClass.RESERVED
    if not address.is_global or any(address in network for network in _NOT_GLOBAL):
        return AddressClass.NOT_GLOBAL
    return None


def parse_address(text: str) -> IPAddress | None:
    """`text` as a canonical IP address (brackets around IPv6 allowed), else None."""
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """How hosts are compared: lower case, without the trailing dot of a fully qualified name."""
    return host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Hosts a webhook may reach although internal (development receivers); empty in production."""

    names: frozenset[str] = frozenset()
    addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> AllowedHosts:
        """From PM_WEBHOOK_ALLOWED_HOSTS: comma-separated host names or IP addresses."""
        names: set[str] = set()
        addresses: set[IPAddress] = set()
        for entry in (text or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            address = parse_address(entry)
            if address is not None:
                addresses.add(address)
            elif HOST_NAME.fullmatch(normalize_host(entry)):
                names.add(normalize_host(entry))
            else:
                raise ValueError(f"{entry!r} is neither a host name nor an IP address")
        return cls(frozenset(names), frozenset(addresses))

    def allows_name(self, host: str) -> bool:
        return normalize_host(host) in self.names


class WebhookRefused(ValueError):
    """The webhook URL, or an address its host resolves to, is not allowed; the message says why."""


def check_addresses(host: str, addresses: list[str], allowed: AllowedHosts) -> None:
    """Raise WebhookRefused unless every address `host` resolved to may be connected to."""
    if allowed.allows_name(host):
        return
    if not addresses:
        raise WebhookRefused(f"{host} resolves to no address")
    for text in addresses:
        address = parse_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) says nothing more
        if address is None:
            raise WebhookRefused(f"{host} resolves to {text!r}, which is not an IP address")
        if address in allowed.addresses:
            continue
        refused = classify(address)
        if refused is not None:
            named = f"{address} is" if parse_address(host) == address else f"{host} resolves to {address}, which is"
            raise WebhookRefused(f"{named} {refused}: internal hosts need PM_WEBHOOK_ALLOWED_HOSTS")
