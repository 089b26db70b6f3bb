"""`pm send p2p|withdraw|topup|adjust|refund` and `pm balance`: the signed client from the command line.

The key comes from PM_API_KEY_ID / PM_API_KEY_SECRET, else from the demo keys `pm up` wrote to the
data dir; the gateway from PM_GATEWAY_URL, else PM_HTTP_HOST:PM_HTTP_PORT. `pm send` posts the intent,
then shows its states as they arrive (Server-Sent Events) and exits 0 only when it SETTLED.
"""

from __future__ import annotations

import argparse
import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from pm.cli.common import WALLET_CURRENCY_HELP, CommandError
from pm.config.settings import Settings

FINAL_STATES = ("SETTLED", "REJECTED", "FAILED")
CURRENCY_EXPONENT = {"THB": 2, "USD": 2, "EUR": 2}


class SendError(ValueError):
    """Bad arguments or missing credentials, said in one line."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser("send", help="post a signed intent and follow its states").add_subparsers(
        required=True, metavar="KIND"
    )
    p2p = send.add_parser("p2p", help="a P2P transfer: --from USER --to USER --amount 150.00")
    p2p.add_argument("--from", dest="sender", type=int, required=True)
    p2p.add_argument("--to", dest="recipient", type=int, required=True)
    p2p.add_argument("--amount", required=True, help="in major units, e.g. 150.00")
    p2p.add_argument("--currency", default=None, help=WALLET_CURRENCY_HELP)
    p2p.add_argument("--tags", default="", help="comma-separated, e.g. kyc_verified")
    _add_fee_bounds(p2p)
    p2p.set_defaults(command=_send_p2p)
    withdraw = send.add_parser("withdraw", help="an IPPS withdrawal: --from USER --amount 500.00 [--destination T]")
    withdraw.add_argument("--from", dest="sender", type=int, required=True)
    withdraw.add_argument("--amount", required=True, help="in major units; with the simulator the last two "
                          "digits of the minor units pick its behaviour (README: PSP simulator)")  # fmt: skip
    withdraw.add_argument("--currency", default=None, help=WALLET_CURRENCY_HELP)
    withdraw.add_argument("--destination", default="demo-bank-token", help="the Auth Center's payee token")
    _add_fee_bounds(withdraw)
    withdraw.set_defaults(command=_send_withdraw)
    topup = send.add_parser("topup", help="a QP top-up: --to USER --amount 1000.00 (the user pays a QR at QP)")
    topup.add_argument("--to", dest="recipient", type=int, required=True)
    topup.add_argument("--amount", required=True, help="in major units; the simulator reads the last two digits")
    topup.add_argument("--currency", default=None, help=WALLET_CURRENCY_HELP)
    _add_fee_bounds(topup)
    topup.set_defaults(command=_send_topup)
    adjust = send.add_parser("adjust", help="credit a user from adjustments (admin key): --to USER --amount")
    adjust.add_argument("--to", dest="recipient", type=int, required=True)
    adjust.add_argument("--amount", required=True)
    adjust.add_argument("--currency", default=None, help=WALLET_CURRENCY_HELP)
    adjust.add_argument("--operator", type=int, default=None, help="the operator's user id, recorded")
    adjust.set_defaults(command=_send_adjust)
    refund = send.add_parser("refund", help="refund a settled transfer: --of INTENT --by USER --amount 50.00")
    refund.add_argument("--of", dest="original", type=uuid.UUID, required=True, help="the intent to refund")
    refund.add_argument("--by", dest="refunder", type=int, default=None,
                        help="its recipient (X-User-Id); with an admin key (PM_API_KEY_*) none")  # fmt: skip
    refund.add_argument("--amount", required=True, help="in major units, at most what is left to refund")
    refund.add_argument("--currency", default=None, help="the original's (ISO 4217); default: PM_WALLET_CURRENCY (THB)")
    _add_fee_bounds(refund)
    refund.set_defaults(command=_send_refund)
    balance = commands.add_parser("balance", help="a user's balance through the gateway")
    balance.add_argument("--user", type=int, required=True)
    balance.add_argument("--currency", default=None, help="default: the gateway's wallet currency")
    balance.set_defaults(command=_balance)


def _add_fee_bounds(parser: argparse.ArgumentParser) -> None:
    """The fees the user agreed to (a quote's), in major units: a higher fee rejects it FEE_CHANGED."""
    parser.add_argument("--max-fee-pre", default=None, help="in major units, e.g. 15.00: the highest PRE fee to pay")
    parser.add_argument("--max-fee-post", default=None, help="in major units: the highest POST fee to pay")


async def _send(
    settings: Settings, arguments: argparse.Namespace, role: str, operation_type: str, **fields: Any
) -> int:
    """Post one signed intent (amount in major units from the arguments) and follow its states."""
    currency = arguments.currency or settings.wallet_currency
    try:
        amount_minor = to_minor_units(arguments.amount, currency)
        request = {"operation_type": operation_type, "amount_minor": amount_minor, "currency": currency}
        for name in ("max_fee_pre", "max_fee_post"):
            bound = getattr(arguments, name, None)
            if bound is not None:
                request[f"{name}_minor"] = to_minor_units(bound, currency, zero_allowed=True)
        return await send_and_follow(settings, role, {**request, **fields})
    except SendError as exc:
        raise CommandError(str(exc)) from exc


async def _send_p2p(settings: Settings, arguments: argparse.Namespace) -> int:
    tags = [tag for tag in arguments.tags.split(",") if tag]
    return await _send(
        settings, arguments, "app", "P2P_TRANSFER", user_id=arguments.sender, recipient_id=arguments.recipient,
        tags=tags,
    )  # fmt: skip


async def _send_withdraw(settings: Settings, arguments: argparse.Namespace) -> int:
    return await _send(
        settings, arguments, "app", "IPPS_WITHDRAWAL", user_id=arguments.sender,
        destination_ref=arguments.destination,
    )  # fmt: skip


async def _send_topup(settings: Settings, arguments: argparse.Namespace) -> int:
    return await _send(settings, arguments, "app", "QP_TOPUP", user_id=arguments.recipient)


async def _send_adjust(settings: Settings, arguments: argparse.Namespace) -> int:
    return await _send(
        settings, arguments, "admin", "ADMIN_ADJUSTMENT", user_id=arguments.operator,
        recipient_id=arguments.recipient,
    )  # fmt: skip


async def _send_refund(settings: Settings, arguments: argparse.Namespace) -> int:
    return await _send(
        settings, arguments, "app", "REFUND", user_id=arguments.refunder, refund_of=str(arguments.original)
    )


async def _balance(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        return await show_balance(settings, arguments.user, arguments.currency)
    except SendError as exc:
        raise CommandError(str(exc)) from exc


def to_minor_units(amount: str, currency: str, *, zero_allowed: bool = False) -> int:
    """'150.00' THB -> 15000. Exact: more decimals than the currency has is an error, never rounded.
    Positive, or (`zero_allowed`: a fee bound) at least 0."""
    try:
        exponent = CURRENCY_EXPONENT[currency]
    except KeyError:
        raise SendError(f"unknown currency {currency!r}; known: {', '.join(CURRENCY_EXPONENT)}") from None
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise SendError(f"amount {amount!r} is not a number") from None
    minor = value.scaleb(exponent)
    if not value.is_finite() or minor != minor.to_integral_value() or minor < 0 or (minor == 0 and not zero_allowed):
        least = "at least 0" if zero_allowed else "positive"
        raise SendError(f"amount {amount!r} must be {least} with at most {exponent} decimals")
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
    # Imported here: every `pm` command loads this module to register `pm send`; only a request needs aiohttp.
    from pm.client import PMClient

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
    from pm.client import PMClient  # here, not at the top: as in send_and_follow

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
