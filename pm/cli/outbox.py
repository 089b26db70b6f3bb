"""`pm outbox list|retry` and `pm merchants webhook set`: what the outbox worker delivers, and where.

The worker itself is consumers/outbox.py; these commands read and nudge its rows (a retry makes one due
now, also one given up) and register a merchant's webhook URL and signing secret, the secret printed
once. A bad merchant id, a refused URL (pm/domain/webhook_policy.py) or an unknown row exits 1 with
nothing written.
"""

from __future__ import annotations

import argparse
import json

from pm.cli.common import EXIT_OK, EXIT_PROBLEM_FOUND, CommandError, database_connection
from pm.config.settings import Settings
from pm.domain import signing


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = commands.add_parser("outbox", help="what the outbox worker delivers").add_subparsers(
        required=True, metavar="COMMAND"
    )
    outbox_list = outbox.add_parser("list", help="newest outbox rows (webhooks, review events) and their delivery")
    outbox_list.add_argument("--undelivered", action="store_true", help="only rows not delivered yet")
    outbox_list.add_argument("--limit", type=int, default=50)
    outbox_list.add_argument("--json", action="store_true", help="print JSON")
    outbox_list.set_defaults(command=_outbox_list)
    outbox_retry = outbox.add_parser("retry", help="send an undelivered row again now (also one given up)")
    outbox_retry.add_argument("row_id", type=int)
    outbox_retry.set_defaults(command=_outbox_retry)
    merchants = commands.add_parser("merchants", help="mini-app merchants").add_subparsers(
        required=True, metavar="COMMAND"
    )
    webhook = merchants.add_parser("webhook", help="the merchant's webhook").add_subparsers(
        required=True, metavar="COMMAND"
    )
    webhook_set = webhook.add_parser("set", help="where the merchant's webhooks go; prints the signing secret once")
    webhook_set.add_argument("merchant_id", type=int)
    webhook_set.add_argument("url")
    webhook_set.set_defaults(command=_webhook_set)


async def _outbox_list(settings: Settings, arguments: argparse.Namespace) -> int:
    from consumers import outbox

    async with database_connection(settings) as connection:
        rows = await outbox.list_rows(connection, arguments.undelivered, arguments.limit)
    if arguments.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    for row in rows:
        state = "delivered" if row["delivered_at"] else "GAVE UP" if row["gave_up_at"] else "pending"
        error = f"  {row['last_error']}" if row["last_error"] and not row["delivered_at"] else ""
        receiver = f"merchant={row['merchant_id']}" if row["kind"] == "merchant_webhook" else row["kind"]
        print(f"{row['id']:>8}  {state:9} {receiver} intent={row['intent_id']} v{row['version']}"
              f" attempts={row['attempts']}{error}")  # fmt: skip
    return EXIT_OK


async def _outbox_retry(settings: Settings, arguments: argparse.Namespace) -> int:
    from consumers import outbox

    async with database_connection(settings) as connection:
        found = await outbox.retry(connection, arguments.row_id)
    if not found:
        raise CommandError(f"no undelivered outbox row {arguments.row_id}", EXIT_PROBLEM_FOUND)
    print(f"outbox row {arguments.row_id} is due now")
    return EXIT_OK


async def _webhook_set(settings: Settings, arguments: argparse.Namespace) -> int:
    from consumers import outbox
    from pm.domain.webhook_policy import WebhookRefused
    from pm.webhooks.client import check_webhook_url

    if arguments.merchant_id <= 0:
        raise CommandError("merchant_id must be a positive integer", EXIT_PROBLEM_FOUND)
    try:  # before anything is stored; the outbox worker checks again at every delivery
        await check_webhook_url(arguments.url, settings.webhook_allowed())
    except WebhookRefused as exc:
        raise CommandError(f"webhook URL refused: {exc}", EXIT_PROBLEM_FOUND) from exc
    secret = signing.new_secret()
    async with database_connection(settings) as connection:
        await outbox.set_webhook(connection, arguments.merchant_id, arguments.url, secret)
    print(f"merchant {arguments.merchant_id} webhooks go to {arguments.url}")
    print(f"signing secret (shown once): {secret}")
    return EXIT_OK
