"""`pm send p2p|adjust` and `pm balance`: the signed client from the command line.

The key comes from PM_API_KEY_ID / PM_API_KEY_SECRET, else from the demo keys `pm up` wrote to the
data dir; the gateway from PM_GATEWAY_URL, else PM_HTTP_HOST:PM_HTTP_PORT. `pm send` posts the intent,
then shows its states as they arrive (Server-Sent Events) and exits 0 only when it SETTLED.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from pm.client import PMClient
from pm.config.settings import Settings

FINAL_STATES = ("SETTLED", "REJECTED", "FAILED")
CURRENCY_EXPONENT = {"THB": 2, "USD": 2, "EUR": 2}


class SendError(ValueError):
    """Bad arguments or missing credentials, said in one line."""


def to_minor_units(amount: str, currency: str) -> int:
    """'150.00' THB -> 15000. Exact: more decimals than the currency has is an error, never rounded."""
    try:
        exponent = CURRENCY_EXPONENT[currency]
    except KeyError:
        raise SendError(f"unknown currency {currency!r}; known: {', '.join(CURRENCY_EXPONENT)}") from None
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise SendError(f"amount {amount!r} is not a number") from None
    minor = value.scaleb(exponent)
    if not value.is_finite() or minor != minor.to_integral_value() or minor <= 0:
        raise SendError(f"amount {amount!r} must be positive with at most {exponent} decimals")
    return int(minor)


def credentials(settings: Settings, role: str) -> tuple[str, str]:
    if settings.api_key_id and settings.api_key_secret:
        return settings.api_key_id, settings.api_key_secret
    from pm.dev.up import demo_keys_path

    path = demo_keys_path(settings)
    if not path.exists():
        raise SendError(f"no API key: set PM_API_KEY_ID and PM_API_KEY_SECRET, or run `pm up` (writes {path})")
    stored = json.loads(path.read_text())[role]
    return stored["key_id"], stored["secret"]


def gateway_url(settings: Settings) -> str:
    return settings.gateway_url or f"http://{settings.http_host}:{settings.http_port}"


async def send_and_follow(settings: Settings, role: str, request: dict[str, Any]) -> int:
    key_id, secret = credentials(settings, role)
    async with PMClient(gateway_url(settings), key_id, secret) as client:
        intent = await client.create_intent(idempotency_key=str(uuid.uuid4()), **request)
        print(f"intent {intent['id']}  {intent['amount_minor']} minor {intent['currency']}")
        user_id = request.get("user_id") or request.get("recipient_id")
        final = intent
        async for event in client.events(intent["id"], user_id=user_id):
            error = f"  {event['error_code']}: {event['error_message']}" if event.get("error_code") else ""
            print(f"  v{event['version']}  {event['state']}{error}", flush=True)
            final = event
        if final["state"] not in FINAL_STATES:
            final = await client.get_intent(intent["id"], user_id=user_id)
            print(f"  now {final['state']} (the event stream ended first)")
        return 0 if final["state"] == "SETTLED" else 1


async def show_balance(settings: Settings, user_id: int, currency: str | None) -> int:
    """None: the gateway's wallet currency (GET /api/pm/balance without ?currency=)."""
    key_id, secret = credentials(settings, "app")
    async with PMClient(gateway_url(settings), key_id, secret) as client:
        balance = await client.balance(currency, user_id=user_id)
    currency = balance["currency"]
    exponent = CURRENCY_EXPONENT.get(currency, 2)
    print(
        f"user {user_id}: available {Decimal(balance['available_minor']).scaleb(-exponent)} {currency}, "
        f"held {Decimal(balance['pending_minor']).scaleb(-exponent)}"
    )
    return 0
