"""`pm keys create|rotate|revoke|set-rate|list`: callers' API keys (HMAC), kept in pm.api_key by pm/store/keys.py.

A secret is printed once, when it is made (create, rotate); `list` never shows one. Bad input (scopes,
operation types, a grace, a rate) exits 2 with nothing changed; an unknown or revoked key exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from pm.cli.common import EXIT_OK, EXIT_PROBLEM_FOUND, CommandError, database_connection
from pm.config.constants import KEY_REQUESTS_PER_S_DEFAULT, KEY_REQUESTS_PER_S_MAX, KEY_REQUESTS_PER_S_MIN
from pm.config.settings import Settings
from pm.domain.intent import OperationType
from pm.store import keys


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    key_commands = commands.add_parser("keys", help="API keys of callers (HMAC)").add_subparsers(
        required=True, metavar="COMMAND"
    )
    create = key_commands.add_parser("create", help="make a key; prints its id and secret once")
    create.add_argument("name", help="who uses it, e.g. auth-center")
    create.add_argument("--scopes", required=True, help="comma-separated: " + ",".join(keys.SCOPES))
    create.add_argument("--merchant-id", type=int, default=None, help="bind the key to one merchant")
    create.add_argument(
        "--operations",
        default=None,
        help="comma-separated operation types the key may create (or none): "
        + ",".join(OperationType.__members__)
        + "; required for a key with intents:write or admin, except a merchant's (default: its two MINIAPP"
        " types, the only ones it may ever create); a key without those scopes gets none",
    )
    create.add_argument(
        "--rate",
        type=int,
        default=KEY_REQUESTS_PER_S_DEFAULT,
        help=f"signed requests per second each gateway process admits for this key, also its burst"
        f" ({KEY_REQUESTS_PER_S_MIN} to {KEY_REQUESTS_PER_S_MAX}; default {KEY_REQUESTS_PER_S_DEFAULT});"
        " beyond it: 429 RATE_LIMITED",
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(command=_keys_create)
    rotate = key_commands.add_parser(
        "rotate", help="issue a new secret; the previous one keeps working for the grace period, then stops"
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace",
        default="24h",
        help="how long the previous secret keeps working: e.g. 90s, 30m, 1h, 2d, or 0 (stops at once, with any"
        " older one); default 24h, at most 30d",
    )
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(command=_keys_rotate)
    revoke = key_commands.add_parser("revoke", help="refuse the key from now on")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_keys_revoke)
    set_rate = key_commands.add_parser("set-rate", help="change a key's request rate (every gateway within a second)")
    set_rate.add_argument("key_id")
    set_rate.add_argument(
        "rate", type=int, help=f"requests per second, {KEY_REQUESTS_PER_S_MIN} to {KEY_REQUESTS_PER_S_MAX}"
    )
    set_rate.set_defaults(command=_keys_set_rate)
    listing = key_commands.add_parser("list", help="every key, without secrets")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(command=_keys_list)


async def _keys_create(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        keys.check_rate(arguments.rate)  # before anything is opened: bad input changes nothing
    except keys.ApiKeyError as exc:
        raise CommandError(str(exc)) from exc
    async with database_connection(settings) as connection:
        try:
            key, secret = await keys.create_key(
                connection,
                arguments.name,
                arguments.scopes,
                arguments.merchant_id,
                arguments.operations,
                requests_per_s=arguments.rate,
            )
        except keys.ApiKeyError as exc:
            raise CommandError(str(exc)) from exc
    _print_secret(key, secret, arguments.json)
    return EXIT_OK


async def _keys_rotate(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        grace_s = keys.parse_grace_s(arguments.grace)  # before anything is opened: bad input changes nothing
    except keys.ApiKeyError as exc:
        raise CommandError(str(exc)) from exc
    async with database_connection(settings) as connection:
        rotated = await keys.rotate_key(connection, arguments.key_id, grace_s)
    if rotated is None:
        raise CommandError(f"no active key {arguments.key_id!r}", EXIT_PROBLEM_FOUND)
    key, secret = rotated
    _print_secret(key, secret, arguments.json)
    if not arguments.json:
        expires_at = key.previous_secret_expires_at
        ends = f"works until {expires_at.isoformat()}" if expires_at else "stopped working now"
        print(f"pm: the previous secret {ends}", file=sys.stderr)
    return EXIT_OK


async def _keys_set_rate(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        keys.check_rate(arguments.rate)  # before anything is opened: bad input changes nothing
    except keys.ApiKeyError as exc:
        raise CommandError(str(exc)) from exc
    async with database_connection(settings) as connection:
        key = await keys.set_rate(connection, arguments.key_id, arguments.rate)
    if key is None:
        raise CommandError(f"no active key {arguments.key_id!r}", EXIT_PROBLEM_FOUND)
    print(f"pm: key {key.key_id} admits {key.requests_per_s} requests/s from now on (each gateway process)")
    return EXIT_OK


async def _keys_revoke(settings: Settings, arguments: argparse.Namespace) -> int:
    async with database_connection(settings) as connection:
        revoked = await keys.revoke_key(connection, arguments.key_id)
    if not revoked:
        raise CommandError(f"no active key {arguments.key_id!r}", EXIT_PROBLEM_FOUND)
    print(f"pm: key {arguments.key_id} revoked")
    return EXIT_OK


async def _keys_list(settings: Settings, arguments: argparse.Namespace) -> int:
    async with database_connection(settings) as connection:
        listed = await keys.list_keys(connection)
    if arguments.json:
        print(json.dumps([key.to_json() for key in listed], indent=2))
        return EXIT_OK
    for key in listed:
        status = "revoked" if key.revoked else "active"
        merchant = f" merchant={key.merchant_id}" if key.merchant_id else ""
        operations = ",".join(sorted(key.operations)) or keys.OPERATIONS_NONE
        scopes = ",".join(sorted(key.scopes))
        rate = f"rate={key.requests_per_s}/s"
        print(f"{key.key_id}  {status:7}  {scopes}{merchant}  operations={operations}  {rate}  {key.name}")
    return EXIT_OK


def _print_secret(key: keys.ApiKey, secret: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**key.to_json(), "secret": secret}, indent=2))
        return
    print(f"key_id: {key.key_id}")
    print(f"secret: {secret}")
    print("pm: store the secret now; it is not shown again", file=sys.stderr)
