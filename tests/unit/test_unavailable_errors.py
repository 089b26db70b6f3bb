"""Proves which errors mean "a dependency is down" (issue 12, items 2 and 3): asyncpg's errors for a server
that is unreachable, shut down or terminated our backend, and for a connection that died under a statement,
answer 503 UNAVAILABLE with Retry-After at the gateway and leave a stage's batch pending uncounted; the
postgres ledger raises them as LedgerUnavailableError; a bad statement or argument stays a bug (500).
asyncpg's state errors raised while it cleaned up after a dying connection (a transaction's ROLLBACK, then
the pool's on release) are that outage too; raised after a bug, or alone, they are bugs."""

from __future__ import annotations

import asyncpg
import pytest
import redis.exceptions
from aiohttp.test_utils import make_mocked_request

from consumers.runtime import dependency_down
from gateway.errors import to_error_response
from ledger import LedgerUnavailableError
from ledger.postgres import _translated
from pm.redis.wire import redis_unavailable
from pm.store.pool import database_unavailable


def _raised_while_handling(*errors: BaseException) -> BaseException:
    """The last of `errors`, raised while handling the one before it, and so on: as asyncpg chains a
    failed ROLLBACK to the statement's error, and the pool's failed ROLLBACK on release to that."""
    chained: BaseException | None = None
    for error in errors:
        try:
            try:
                if chained is not None:
                    raise chained
            finally:
                raise error
        except BaseException as exc:
            chained = exc
    assert chained is not None
    return chained


IN_PROGRESS = "cannot perform operation: another operation is in progress"
DOWN = [
    ConnectionRefusedError(111, "Connection refused"),
    FileNotFoundError(2, "No such file or directory"),  # a unix socket whose server is gone
    TimeoutError(),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool"),
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    # Seen in CI: a COPY after the FATAL (tests/integration/test_dying_connection.py), then the
    # transaction's ROLLBACK, then the pool's on release.
    _raised_while_handling(
        asyncpg.InternalClientError("cannot switch to state 21; another operation (2) is in progress"),
        asyncpg.InterfaceError(IN_PROGRESS),
        asyncpg.InterfaceError(IN_PROGRESS),
    ),
    _raised_while_handling(
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError(IN_PROGRESS),
    ),
    _raised_while_handling(
        TimeoutError(), asyncpg.InterfaceError("cannot perform operation: another operation is cancelling")
    ),
]
BUGS = [
    asyncpg.UndefinedColumnError("column x does not exist"),
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.DataError("invalid input for query argument $1"),
    asyncpg.InterfaceError(IN_PROGRESS),
    asyncpg.InternalClientError("something else entirely"),
    ValueError("bad"),
    # A bug's transaction whose cleanup failed too is still the bug.
    _raised_while_handling(asyncpg.UniqueViolationError("duplicate key"), asyncpg.InterfaceError(IN_PROGRESS)),
    # Only asyncpg's own cleanup errors stand for what came before: a program's error while handling an
    # outage is its own bug.
    _raised_while_handling(asyncpg.ConnectionDoesNotExistError("closed"), ValueError("bad")),
]


@pytest.mark.parametrize("exc", DOWN, ids=repr)
def test_down_means_the_database_is_unavailable(exc: Exception) -> None:
    assert database_unavailable(exc)
    assert dependency_down(exc) == "database"


@pytest.mark.parametrize("exc", BUGS, ids=repr)
def test_a_wrong_statement_is_not_an_outage(exc: Exception) -> None:
    assert not database_unavailable(exc)
    assert dependency_down(exc) is None


def test_the_ledger_is_named() -> None:
    assert dependency_down(LedgerUnavailableError("down")) == "ledger"


E = redis.exceptions
REDIS_DOWN = [
    E.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    E.TimeoutError("Timeout reading from socket"),
    E.BusyLoadingError("Redis is loading the dataset in memory"),
    # A cluster whose master stopped answering (seen on a real one, tests/e2e/cluster/test_cluster_outage.py).
    E.ClusterDownError("The cluster is down"),
    E.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    E.TryAgainError("Multiple keys request during rehashing of slot"),
    E.ClusterError("TTL exhausted."),
    E.SlotNotCoveredError('Slot "1234" is not covered by the cluster.'),
    E.RedisClusterUnreachableError("Redis Cluster cannot be connected. Please provide at least one reachable node"),
    E.ReadOnlyError("You can't write against a read only replica."),
    E.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
]
REDIS_BUGS = [
    E.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    E.ResponseError("NOGROUP No such key or consumer group"),  # Redis lost its data: recreated, not waited on
    E.ClusterCrossSlotError("Keys in request don't hash to the same slot"),
    E.RedisClusterException("EVALSHA - all keys must map to the same key slot"),
    E.DataError("Invalid input of type: 'NoneType'"),
]


@pytest.mark.parametrize("exc", REDIS_DOWN, ids=repr)
async def test_redis_down_is_named_and_answered_503(exc: Exception) -> None:
    assert redis_unavailable(exc)
    assert dependency_down(exc) == "redis"
    response = await _answer(exc)
    assert response.status == 503 and response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("exc", REDIS_BUGS, ids=repr)
async def test_a_wrong_redis_command_is_not_an_outage(exc: Exception) -> None:
    assert not redis_unavailable(exc)
    assert dependency_down(exc) is None
    assert (await _answer(exc)).status == 500


async def _raising(exc: Exception):
    async def method(self: object) -> None:
        raise exc

    return await _translated(method)(object())


@pytest.mark.parametrize("exc", DOWN, ids=repr)
async def test_the_postgres_ledger_raises_its_own_error_for_an_unreachable_database(exc: Exception) -> None:
    with pytest.raises(LedgerUnavailableError) as raised:
        await _raising(exc)
    assert raised.value.__cause__ is exc


@pytest.mark.parametrize("exc", BUGS, ids=repr)
async def test_the_postgres_ledger_lets_bugs_through(exc: Exception) -> None:
    with pytest.raises(type(exc)):
        await _raising(exc)


async def _answer(exc: Exception):
    async def handler(request):
        raise exc

    return await to_error_response(make_mocked_request("POST", "/intents"), handler)


@pytest.mark.parametrize("exc", [*DOWN, LedgerUnavailableError("down"), redis.exceptions.ConnectionError()], ids=repr)
async def test_the_gateway_answers_503_with_retry_after(exc: Exception) -> None:
    response = await _answer(exc)
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert b'"code":"UNAVAILABLE"' in response.body


@pytest.mark.parametrize("exc", BUGS, ids=repr)
async def test_the_gateway_answers_500_for_a_bug(exc: Exception) -> None:
    response = await _answer(exc)
    assert response.status == 500 and b'"code":"INTERNAL"' in response.body
