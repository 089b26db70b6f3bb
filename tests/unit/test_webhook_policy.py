"""Proves the merchant webhook policy (pm/webhooks/policy.py): which addresses a webhook may connect to
(the table), which URL forms are refused and why, and what PM_WEBHOOK_ALLOWED_HOSTS allows."""

from __future__ import annotations

import ipaddress

import pytest

from pm.domain.webhook_policy import AddressClass, AllowedHosts, WebhookRefused, check_addresses, classify
from pm.webhooks.policy import parse_target

A = AddressClass


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        # Public: allowed.
        ("8.8.8.8", None),
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),  # IPv4-mapped: judged by the IPv4 address
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
        # Loopback.
        ("127.0.0.1", A.LOOPBACK),
        ("127.255.255.254", A.LOOPBACK),
        ("::1", A.LOOPBACK),
        ("::ffff:127.0.0.1", A.LOOPBACK),
        ("2002:7f00:1::", A.LOOPBACK),  # 6to4 of 127.0.0.1
        ("64:ff9b::7f00:1", A.LOOPBACK),  # NAT64 of 127.0.0.1
        # Private: RFC 1918, unique local, deprecated site-local.
        ("10.0.0.1", A.PRIVATE),
        ("172.16.0.1", A.PRIVATE),
        ("172.31.255.255", A.PRIVATE),
        ("192.168.1.1", A.PRIVATE),
        ("::ffff:10.1.2.3", A.PRIVATE),
        ("fc00::1", A.PRIVATE),
        ("fd12:3456::1", A.PRIVATE),
        ("fec0::1", A.PRIVATE),
        # Link-local, with the cloud metadata endpoints.
        ("169.254.169.254", A.LINK_LOCAL),
        ("169.254.0.1", A.LINK_LOCAL),
        ("fe80::1", A.LINK_LOCAL),
        ("::ffff:169.254.169.254", A.LINK_LOCAL),
        # Multicast (Python calls some of it global).
        ("224.0.0.1", A.MULTICAST),
        ("239.255.255.250", A.MULTICAST),
        ("ff02::1", A.MULTICAST),
        # Unspecified and "this network" (0.0.0.0 connects to this machine on Linux).
        ("0.0.0.0", A.UNSPECIFIED),
        ("0.1.2.3", A.UNSPECIFIED),
        ("::", A.UNSPECIFIED),
        ("::ffff:0.0.0.0", A.UNSPECIFIED),
        # Shared (carrier-grade NAT), reserved, and the other special-purpose blocks.
        ("100.64.0.1", A.SHARED),
        ("100.127.255.255", A.SHARED),
        ("240.0.0.1", A.RESERVED),
        ("255.255.255.255", A.RESERVED),
        ("192.0.0.8", A.NOT_GLOBAL),
        ("192.0.2.1", A.NOT_GLOBAL),  # documentation
        ("198.18.0.1", A.NOT_GLOBAL),  # benchmarking
        ("2001:db8::1", A.NOT_GLOBAL),
        ("::127.0.0.1", A.RESERVED),  # IPv4-compatible (deprecated)
    ],
)
def test_the_address_table(address: str, refused: AddressClass | None) -> None:
    assert classify(ipaddress.ip_address(address)) == refused


def test_one_internal_address_refuses_the_host_and_the_reason_names_it() -> None:
    check_addresses("shop.example.com", ["93.184.215.14", "2606:4700::1"], AllowedHosts())
    with pytest.raises(WebhookRefused, match=r"shop\.example\.com resolves to 10\.0\.0\.7, which is private"):
        check_addresses("shop.example.com", ["93.184.215.14", "10.0.0.7"], AllowedHosts())
    with pytest.raises(WebhookRefused, match="resolves to no address"):
        check_addresses("shop.example.com", [], AllowedHosts())


def test_allowed_hosts_allow_a_name_whatever_it_resolves_to_and_an_address_however_it_is_named() -> None:
    allowed = AllowedHosts.parse(" receiver.test. , 127.0.0.1,[::1]")
    assert allowed.names == {"receiver.test"}
    assert allowed.addresses == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    check_addresses("Receiver.Test", ["10.9.9.9"], allowed)
    check_addresses("localhost", ["127.0.0.1", "::1"], allowed)
    with pytest.raises(WebhookRefused, match="loopback"):
        check_addresses("localhost", ["127.0.0.2"], allowed)
    with pytest.raises(ValueError, match="neither a host name nor an IP address"):
        AllowedHosts.parse("http://receiver.test/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://shop.example.com/hook", r"must be http\(s\)"),
        ("file:///etc/passwd", r"must be http\(s\)"),
        ("https:///hook", r"must be http\(s\)"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", r"must be http\(s\)"),
        ("https://user:secret@shop.example.com/hook", "user name or password"),
        ("https://shop.example.com@10.0.0.1/hook", "user name or password"),
        ("https://shop.example.com:0/hook", "port must be from 1 to 65535"),
        ("https://shop.example.com:99999/hook", "not a URL"),
        ("https://127.1/hook", "not a canonical IP address"),
        ("https://2130706433/hook", "not a canonical IP address"),
        ("https://0x7f.0.0.1/hook", "not a canonical IP address"),
        ("https://shop example.com/hook", "printable ASCII"),
        ("https://shop.example.com/" + "x" * 2_000, "at most 2000"),
    ],
)
def test_refused_url_forms(url: str, reason: str) -> None:
    with pytest.raises(WebhookRefused, match=reason):
        parse_target(url)


def test_accepted_url_forms() -> None:
    target = parse_target("https://Shop.Example.com.:8443/hooks/pm?v=1")
    assert (target.host, target.port, target.address) == ("shop.example.com", 8443, None)
    assert parse_target("http://shop.example.com/hook").port == 80
    literal = parse_target("https://[2606:4700::1111]/hook")
    assert (literal.host, literal.address) == ("2606:4700::1111", ipaddress.ip_address("2606:4700::1111"))
