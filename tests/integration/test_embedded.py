"""Proves that embedded servers start in an empty directory, keep data across a restart, and stop on exit."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as redis

from pm.config.settings import Settings
from pm.dev.embedded import APP_DATABASE_NAME, embedded_servers

pytestmark = pytest.mark.slow


async def test_servers_keep_data_across_a_restart_and_stop_on_exit(tmp_path: Path) -> None:
    # A nested, never-used path, as a fresh clone's `.data` would be.
    settings = Settings(data_dir=tmp_path / "clone" / ".data", database_url=None, redis_url=None)

    async with embedded_servers(settings) as (database_url, redis_url):
        connection = await asyncpg.connect(database_url, timeout=10)
        assert await connection.fetchval("SELECT current_database()") == APP_DATABASE_NAME
        await connection.execute("CREATE TABLE kept (value int); INSERT INTO kept VALUES (42)")
        await connection.close(timeout=10)
        client = redis.Redis.from_url(redis_url)
        await client.set("kept", "42")
        server_pids = [_postmaster_pid(settings.data_dir), int((await client.info("server"))["process_id"])]
        await client.aclose()
    assert not any(_running(pid) for pid in server_pids), f"still running after exit: {server_pids}"

    async with embedded_servers(settings) as (database_url, redis_url):
        connection = await asyncpg.connect(database_url, timeout=10)
        assert await connection.fetchval("SELECT value FROM kept") == 42
        await connection.close(timeout=10)
        client = redis.Redis.from_url(redis_url)
        assert await client.get("kept") == b"42"
        server_pids = [_postmaster_pid(settings.data_dir), int((await client.info("server"))["process_id"])]
        await client.aclose()
    assert not any(_running(pid) for pid in server_pids), f"still running after exit: {server_pids}"


async def test_a_second_user_of_the_data_dir_reuses_the_servers_and_leaves_them_running(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / ".data", database_url=None, redis_url=None)
    async with embedded_servers(settings) as outer_urls:
        async with embedded_servers(settings) as inner_urls:
            assert inner_urls == outer_urls
        database_url, redis_url = outer_urls
        connection = await asyncpg.connect(database_url, timeout=10)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close(timeout=10)
        client = redis.Redis.from_url(redis_url)
        assert await client.ping()
        await client.aclose()


async def test_configured_urls_are_used_and_nothing_is_started(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / ".data", database_url="postgresql://pm@db/pm", redis_url="redis://cache:6379/0"
    )
    async with embedded_servers(settings) as urls:
        assert urls == ("postgresql://pm@db/pm", "redis://cache:6379/0")
    assert not (tmp_path / ".data").exists()


def _postmaster_pid(data_dir: Path) -> int:
    # The first line of postmaster.pid, which PostgreSQL removes when it stops.
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
