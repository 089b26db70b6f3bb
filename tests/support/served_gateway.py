"""A real gateway served on a real port from a thread of its own, for callers that block (schemathesis
sends its requests with `requests`, which would stall the test session's event loop if the gateway ran
in it): the same `create_app` and runner options as `pm run gateway`, on a database and streams the
caller gives, until the context ends.

    with served_gateway(settings, database_url, redis_url, topology) as base_url:
        requests.get(f"{base_url}/healthz")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web

from gateway.app import create_app, runner_options
from pm.config.settings import Settings
from pm.config.topology import Topology

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@contextlib.contextmanager
def served_gateway(settings: Settings, database_url: str, redis_url: str, topology: Topology) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    addresses: list[str] = []
    failures: list[BaseException] = []

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        app = create_app(
            settings, database_url=database_url, redis_url=redis_url, ledger_url=database_url, topology=topology
        )
        runner = web.AppRunner(app, handle_signals=False, **runner_options(settings))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            addresses.append(f"http://{host}:{port}")
            started.set()
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # handed to the test's thread, which raises it
            failures.append(exc)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name="served-gateway", daemon=True)
    thread.start()
    if not started.wait(START_TIMEOUT_S) or failures:
        raise RuntimeError(f"the gateway did not start: {failures!r}")
    try:
        yield addresses[0]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT_S)
        assert not thread.is_alive(), "the gateway did not stop"
