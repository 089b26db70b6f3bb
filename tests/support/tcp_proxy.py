"""A loopback TCP relay in front of a server, which a test cuts and restores: a network outage between
the fleet and that server, for servers the test cannot stop itself (a TigerBeetle cluster named by
PM_TIGERBEETLE_ADDRESSES) as well as for those it could.

    proxy = TcpProxy(functools.partial(asyncio.open_connection, "127.0.0.1", 3000))  # or open_unix_connection
    port = await proxy.start()      # clients connect to 127.0.0.1:port instead
    await proxy.cut()               # every relayed connection reset, new ones refused
    await proxy.restore()           # listening again on the same port
    await proxy.close()

`close_delay_s` holds back, that long, the close of a client's side after its server closed: the client
reads the server's last message (a FATAL) well before it sees the connection end, as over a slow link.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tests.support.ports import free_port

CHUNK_BYTES = 64 * 1024

Upstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class TcpProxy:
    def __init__(self, open_upstream: Upstream, *, close_delay_s: float = 0.0) -> None:
        assert 0.0 <= close_delay_s <= 10.0, close_delay_s
        self._open_upstream = open_upstream
        self._close_delay_s = close_delay_s
        self.port = 0
        self.connections = 0  # relayed since start, for a test to see the relay was used
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.port = self.port or free_port()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        return self.port

    async def cut(self) -> None:
        assert self._server is not None, "not listening"
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a dropped link looks to both ends
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def restore(self) -> None:
        assert self._server is None, "already listening"
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_writer, upstream_writer))
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, client_writer, self._close_delay_s)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pipes.difference_update(pipes)
            self._writers.difference_update((client_writer, upstream_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close_delay_s: float = 0.0) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
            await asyncio.sleep(close_delay_s)  # an orderly end of the server's side, held back
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended or broke: so does the other (a half-open relay would hang its client).
            with contextlib.suppress(Exception):
                writer.transport.abort()
