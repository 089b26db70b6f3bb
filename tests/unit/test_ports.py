"""The test servers' ports: below the ephemeral range, from the worker's own block, never a bound one."""

from __future__ import annotations

import socket

import pytest

from tests.support import ports


def test_ports_come_from_the_workers_own_block_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    start = ports.FIRST_PORT + 3 * ports.BLOCK_PORTS
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    assert all(start <= port < start + ports.BLOCK_PORTS for port in handed)
    assert start + ports.BLOCK_PORTS <= 32768  # Linux's default ephemeral range begins there


def test_a_port_someone_holds_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setattr(ports, "_next_offset", iter([7, 7, 8]))
    held = ports.FIRST_PORT + ports.BLOCK_PORTS + 7
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held))
        holder.listen()
        assert ports.free_port() == held + 1
