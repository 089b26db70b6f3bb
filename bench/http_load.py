"""A lean HTTP/1.1 load generator for the benchmarks: signed POSTs and GETs over keep-alive connections.

The benchmark's client shares the machine's two cores with the fleet it measures, so what it spends is
taken from the gateway and the stages. aiohttp's client spent ~0.25 ms of CPU per request here (a tenth
of the whole pipeline's); this one writes each request with one `write` and reads the answer with
`readuntil`/`readexactly`, about a third of that. Requests are signed by `pm.domain.signing` exactly as
`pm.client.PMClient` signs them, and the gateway sees ordinary HTTP/1.1 keep-alive requests.

Only what the benchmark needs: answers must carry Content-Length (the gateway's JSON answers do).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from pm.domain import signing

HEADER_END = b"\r\n\r\n"
HEAD_BYTES_MAX = 16 * 1024
BODY_BYTES_MAX = 1024 * 1024


class HttpLoadError(Exception):
    """The gateway closed the connection or answered something this client does not read."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


class SignedConnection:
    """One keep-alive connection; one request at a time (a worker of the closed loop owns one)."""

    def __init__(self, host: str, port: int, key_id: str, secret: str, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.key_id, self.secret = key_id, secret
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def post_json(self, path: str, body: dict[str, Any], *, user_id: int | None) -> Answer:
        payload = orjson.dumps(body)
        headers = signing.sign_headers(
            key_id=self.key_id, secret=self.secret, method="POST", path=path, body=payload,
            user_id=user_id, idempotency_key=uuid.uuid4().hex,
        )  # fmt: skip
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(payload)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        return await asyncio.wait_for(self._exchange(request), self.timeout_s)

    async def get(self, path: str, *, user_id: int | None) -> Answer:
        bare_path, _, raw_query = path.partition("?")
        headers = signing.sign_headers(
            key_id=self.key_id, secret=self.secret, method="GET", path=bare_path, raw_query=raw_query,
            user_id=user_id,
        )  # fmt: skip
        head = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode()
        return await asyncio.wait_for(self._exchange(request), self.timeout_s)

    async def _exchange(self, request: bytes) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_BYTES_MAX)
        assert self._reader is not None
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(HEADER_END)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise HttpLoadError(f"no answer head: {exc!r}") from exc
        lines = head[: -len(HEADER_END)].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        keep_alive = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        if length is None or not 0 <= length <= BODY_BYTES_MAX:
            await self.close()
            raise HttpLoadError(f"answer {status} without a usable Content-Length")
        body = await self._reader.readexactly(length)
        if not keep_alive:
            await self.close()
        return Answer(status, orjson.loads(body) if body else None)
