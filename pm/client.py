"""An async client of the Payment Manager's HTTP API that signs every request (pm/domain/signing.py).

    async with PMClient("http://127.0.0.1:8080", key_id, secret) as client:
        intent = await client.create_intent(
            operation_type="P2P_TRANSFER", amount_minor=10_000, currency="THB",
            user_id=1001, recipient_id=1002, wait_s=5,
        )
        async for event in client.events(intent["id"], user_id=1001):
            print(event["version"], event["state"])
        print(await client.balance("THB", user_id=1001))

Every method returns the JSON body as a dict; an error answer raises `PMApiError(status, code, message)`
with the gateway's machine code (`pm.domain.intent.ErrorCode`). One `aiohttp.ClientSession` (its connection
pool) is reused for all requests; pass your own `session` to share one, then you close it.

Exceptions:
    PMApiError        the gateway answered with an error status (4xx, 5xx)
    aiohttp.ClientError, TimeoutError   the request did not get an answer
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from pm.domain import signing

REQUEST_TIMEOUT_S = 30.0
# The SSE stream may stay open for a long time; only connecting and each read are bounded.
EVENTS_CONNECT_TIMEOUT_S = 10.0
EVENTS_READ_TIMEOUT_S = 120.0
EVENT_LINE_BYTES_MAX = 64 * 1024


class PMApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its status (200, 202, ...), body and headers."""

    status: int
    body: Any
    headers: Mapping[str, str]


class PMClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        secret: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key_id = key_id
        self._secret = secret
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=100),
        )

    async def __aenter__(self) -> PMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self._session.close()

    # -- the API ---------------------------------------------------------------------------------

    async def create_intent(
        self,
        *,
        operation_type: str,
        amount_minor: int,
        currency: str,
        user_id: int | None = None,
        recipient_id: int | None = None,
        tags: Iterable[str] = (),
        idempotency_key: str | None = None,
        wait_s: int | None = None,
        destination_ref: str | None = None,
        refund_of: str | None = None,
        max_fee_pre_minor: int | None = None,
        max_fee_post_minor: int | None = None,
    ) -> dict[str, Any]:
        """POST /intents; the intent as the gateway answered it (CREATED, or final with `wait_s`).

        Without `idempotency_key` a fresh one is made; pass your own to retry safely. `max_fee_*_minor`:
        the fees the user agreed to (a quote's `fee_pre_minor` / `fee_post_minor`); a higher fee ends the
        intent REJECTED FEE_CHANGED with nothing held."""
        answer = await self.create_intent_answer(
            operation_type=operation_type,
            amount_minor=amount_minor,
            currency=currency,
            user_id=user_id,
            recipient_id=recipient_id,
            tags=tags,
            idempotency_key=idempotency_key,
            destination_ref=destination_ref,
            wait_s=wait_s,
            refund_of=refund_of,
            max_fee_pre_minor=max_fee_pre_minor,
            max_fee_post_minor=max_fee_post_minor,
        )
        return answer.body

    async def create_intent_answer(
        self,
        *,
        operation_type: str,
        amount_minor: int,
        currency: str,
        user_id: int | None = None,
        recipient_id: int | None = None,
        tags: Iterable[str] = (),
        idempotency_key: str | None = None,
        wait_s: int | None = None,
        destination_ref: str | None = None,
        refund_of: str | None = None,
        max_fee_pre_minor: int | None = None,
        max_fee_post_minor: int | None = None,
    ) -> Answer:
        """`create_intent`, with the answer's status (200 final, 202 accepted) and headers."""
        body = intent_body(
            operation_type, amount_minor, currency, recipient_id=recipient_id, tags=tags,
            destination_ref=destination_ref, refund_of=refund_of, max_fee_pre_minor=max_fee_pre_minor,
            max_fee_post_minor=max_fee_post_minor,
        )  # fmt: skip
        headers = {"Prefer": f"wait={wait_s}"} if wait_s else None
        return await self.request(
            "POST",
            "/intents",
            body=body,
            user_id=user_id,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            headers=headers,
        )

    async def quote(
        self,
        *,
        operation_type: str,
        amount_minor: int,
        currency: str,
        user_id: int | None = None,
        recipient_id: int | None = None,
        tags: Iterable[str] = (),
        destination_ref: str | None = None,
        max_fee_pre_minor: int | None = None,
        max_fee_post_minor: int | None = None,
    ) -> dict[str, Any]:
        """POST /quote: the fees the intent would pay now (send them back as `max_fee_*_minor`)."""
        body = intent_body(
            operation_type, amount_minor, currency, recipient_id=recipient_id, tags=tags,
            destination_ref=destination_ref, max_fee_pre_minor=max_fee_pre_minor,
            max_fee_post_minor=max_fee_post_minor,
        )  # fmt: skip
        return (await self.request("POST", "/quote", body=body, user_id=user_id)).body

    async def get_intent(self, intent_id: str | uuid.UUID, *, user_id: int | None = None) -> dict[str, Any]:
        return (await self.request("GET", f"/intents/{intent_id}", user_id=user_id)).body

    async def balance(self, currency: str | None = None, *, user_id: int) -> dict[str, Any]:
        """The user's balance in `currency`; None: in the wallet's currency (the gateway's PM_WALLET_CURRENCY)."""
        query = {} if currency is None else {"currency": currency}
        return (await self.request("GET", "/api/pm/balance", query=query, user_id=user_id)).body

    async def confirm_intent(self, intent_id: str | uuid.UUID, *, user_id: int) -> dict[str, Any]:
        """The user confirms a mini-app charge waiting for them (a key with `consent:write`)."""
        return (await self.request("POST", f"/intents/{intent_id}/confirm", user_id=user_id)).body

    async def grant_allowance(
        self, merchant_id: int, daily_max_minor: int, currency: str, *, user_id: int
    ) -> dict[str, Any]:
        """The user lets the merchant charge up to `daily_max_minor` a day without asking."""
        body = {"daily_max_minor": daily_max_minor, "currency": currency}
        return (await self.request("PUT", f"/api/pm/allowances/{merchant_id}", body=body, user_id=user_id)).body

    async def history(self, *, user_id: int, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        query: dict[str, str] = {}
        if limit is not None:
            query["limit"] = str(limit)
        if cursor is not None:
            query["cursor"] = cursor
        return (await self.request("GET", "/api/pm/history", query=query, user_id=user_id)).body

    async def events(
        self, intent_id: str | uuid.UUID, *, user_id: int | None = None, after_version: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """The intent's transitions (Server-Sent Events) after `after_version`, until the server ends
        the stream (after a final state, or its time limit): each an `IntentEvent` JSON."""
        path = f"/intents/{intent_id}/events"
        headers = self._signed_headers("GET", path, "", b"", user_id, None)
        headers["Accept"] = "text/event-stream"
        if after_version:
            headers["Last-Event-ID"] = str(after_version)
        timeout = aiohttp.ClientTimeout(total=None, connect=EVENTS_CONNECT_TIMEOUT_S, sock_read=EVENTS_READ_TIMEOUT_S)
        async with self._session.get(self._url(path, ""), headers=headers, timeout=timeout) as response:
            if response.status >= 400:
                raise await _api_error(response)
            async for data in _server_sent_data(response.content):
                yield json.loads(data)

    # -- signing and transport -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        user_id: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One signed request; the answer when its status is below 400, else raises PMApiError."""
        raw_query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in (query or {}).items())
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        signed = self._signed_headers(method, path, raw_query, payload, user_id, idempotency_key)
        if payload:
            signed["Content-Type"] = "application/json"
        if headers:
            signed.update(headers)
        async with self._session.request(
            method, self._url(path, raw_query), data=payload or None, headers=signed
        ) as response:
            if response.status >= 400:
                raise await _api_error(response)
            answer_body = await response.json(content_type=None)
            return Answer(status=response.status, body=answer_body, headers=dict(response.headers))

    def _signed_headers(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        user_id: int | None,
        idempotency_key: str | None,
    ) -> dict[str, str]:
        return signing.sign_headers(
            key_id=self._key_id,
            secret=self._secret,
            method=method,
            path=path,
            raw_query=raw_query,
            body=body,
            user_id=user_id,
            idempotency_key=idempotency_key,
        )

    def _url(self, path: str, raw_query: str) -> URL:
        # encoded=True: the URL goes out exactly as signed (aiohttp must not re-quote it).
        return URL(self._base_url + path + (f"?{raw_query}" if raw_query else ""), encoded=True)


def intent_body(
    operation_type: str,
    amount_minor: int,
    currency: str,
    *,
    recipient_id: int | None = None,
    tags: Iterable[str] = (),
    destination_ref: str | None = None,
    refund_of: str | None = None,
    max_fee_pre_minor: int | None = None,
    max_fee_post_minor: int | None = None,
) -> dict[str, Any]:
    """The body of POST /intents and POST /quote, with only the fields given."""
    body: dict[str, Any] = {"operation_type": operation_type, "amount_minor": amount_minor, "currency": currency}
    optional = {
        "recipient_id": recipient_id,
        "destination_ref": destination_ref,
        "refund_of": refund_of,  # REFUND: the intent it gives money back for
        "max_fee_pre_minor": max_fee_pre_minor,  # the fees the user agreed to (a quote's)
        "max_fee_post_minor": max_fee_post_minor,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    tag_list = list(tags)
    if tag_list:
        body["metadata"] = {"tags": tag_list}
    return body


async def _api_error(response: aiohttp.ClientResponse) -> PMApiError:
    text = await response.text()
    try:
        error = json.loads(text)["error"]
        return PMApiError(response.status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return PMApiError(response.status, "HTTP_ERROR", text[:200] or response.reason or "")


async def _server_sent_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The `data` of each event of a text/event-stream (comments and pings skipped)."""
    data_lines: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            return
        if len(raw) > EVENT_LINE_BYTES_MAX:
            raise PMApiError(502, "BAD_EVENT_STREAM", "an event line is too long")
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data_lines:
                yield "\n".join(data_lines)
                data_lines = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data_lines.append(value[1:] if value.startswith(" ") else value)
