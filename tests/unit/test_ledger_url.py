"""A malformed ledger URL or an unreachable server fails with an error that names what was wrong."""

from __future__ import annotations

import pytest

import ledger.tigerbeetle_client
from ledger import LedgerUnavailableError, LedgerUrlError, open_ledger
from ledger.open import parse_ledger_url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "is not a URL"),
        ("localhost:5432", "is not a URL"),
        ("mysql://db/x", "unknown scheme 'mysql'"),
        ("memory://somewhere", "memory:// takes no host"),
        ("tigerbeetle://", "names no TigerBeetle address"),
        ("tigerbeetle://abc", "'abc' is not a port"),
        ("tigerbeetle://3000,70000", "'70000' is not a port"),
        ("tigerbeetle://3000?cluster=x", "cluster must be an unsigned 128-bit integer"),
        ("tigerbeetle://3000?replicas=3", "unknown parameter"),
        ("tigerbeetle://3000?request_timeout_ms=0", "request_timeout_ms must be 10 to 600000"),
        ("tigerbeetle://3000?request_timeout_ms=1e3", "request_timeout_ms must be 10 to 600000"),
        ("tigerbeetle://3000?request_timeout_ms=600001", "request_timeout_ms must be 10 to 600000"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(LedgerUrlError, match=message):
        parse_ledger_url(url)


def test_tigerbeetle_url_addresses_and_cluster() -> None:
    parsed = parse_ledger_url("tigerbeetle://3000,127.0.0.1:3001?cluster=7")
    assert (parsed.scheme, parsed.addresses, parsed.cluster_id) == ("tigerbeetle", "3000,127.0.0.1:3001", 7)
    assert parse_ledger_url("tigerbeetle://3000").cluster_id == 0
    assert parse_ledger_url("tigerbeetle://3000").request_timeout_ms == 5_000
    assert parse_ledger_url("tigerbeetle://3000?cluster=1&request_timeout_ms=250").request_timeout_ms == 250


async def test_unreachable_postgres_names_the_problem() -> None:
    # Port 1 on loopback: nothing listens there.
    with pytest.raises(LedgerUnavailableError, match="cannot connect to the ledger database"):
        async with open_ledger("postgresql://nobody@127.0.0.1:1/nothing"):
            pass


async def test_unreachable_tigerbeetle_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger.tigerbeetle_client, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(LedgerUnavailableError, match=r"cluster 0 at '127.0.0.1:1'"):
        async with open_ledger("tigerbeetle://127.0.0.1:1?cluster=0"):
            pass
