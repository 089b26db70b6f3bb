"""The hiredis packer writes exactly the bytes redis-py's own packer writes, and refuses what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from pm.redis.wire import redis_from_url, with_hiredis_packing

ARGS = st.lists(
    st.one_of(st.binary(max_size=300), st.text(max_size=300), st.integers(-(2**63), 2**63 - 1)),
    min_size=1,
    max_size=12,
)


@given(st.lists(ARGS, min_size=1, max_size=8))
def test_commands_pack_to_the_same_bytes(commands: list[list[object]]) -> None:
    plain, fast = Connection(), with_hiredis_packing(Connection)()
    commands = [[b"XADD", *args] for args in commands]
    assert b"".join(fast.pack_commands(commands)) == b"".join(plain.pack_commands(commands))
    for command in commands:
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_a_command_name_with_its_subcommand_is_split() -> None:
    fast = with_hiredis_packing(Connection)()
    assert fast.pack_command("CLIENT SETNAME", "x") == [b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nx\r\n"]


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_what_redis_py_refuses_is_refused(bad: object) -> None:
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_command("SET", "k", bad)


def test_the_connection_kind_of_the_url_is_kept() -> None:
    client = redis_from_url("unix:///tmp/redis.sock")
    assert issubclass(client.connection_pool.connection_class, UnixDomainSocketConnection)
    assert client.connection_pool.connection_class is with_hiredis_packing(UnixDomainSocketConnection)
