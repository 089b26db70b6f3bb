"""`pm rules test`: the active fee rules evaluated for a made-up intent (the logic: pm/cli/rules_report.py).

Exits 0 when the intent would be priced and 1 when it would be refused; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pm.cli.common import EXIT_OK, EXIT_PROBLEM_FOUND, WALLET_CURRENCY_HELP, CommandError, database_connection
from pm.cli.send import SendError, to_minor_units
from pm.config.settings import Settings
from pm.domain.intent import OperationType

if TYPE_CHECKING:
    from pm.domain.pricing import PricingRequest


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rule_commands = commands.add_parser("rules", help="fee rules").add_subparsers(required=True, metavar="COMMAND")
    test = rule_commands.add_parser("test", help="evaluate the active fee rules for a made-up intent")
    test.add_argument("--op", required=True, help="operation type, e.g. P2P_TRANSFER")
    test.add_argument("--amount", required=True, help="in major units, e.g. 1500.00")
    test.add_argument("--currency", default=None, help=WALLET_CURRENCY_HELP)
    test.add_argument("--tags", default="", help="comma-separated, e.g. vip,kyc_verified")
    test.add_argument("--channel", default=None, help="default: the channel the routes choose")
    test.add_argument("--sender", type=int, default=None, help="sender user id")
    test.add_argument("--recipient", type=int, default=None, help="recipient user id")
    test.add_argument("--at", default=None, help="ISO 8601 time of the intent (default: now)")
    test.add_argument("--engine", choices=("production", "reference"), default="production")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(command=_rules_test)


async def _rules_test(settings: Settings, arguments: argparse.Namespace) -> int:
    """Exit 0 when the intent would be priced, 1 when it would be refused (FEE_RULE_ERROR, ...)."""
    from pm.cli.rules_report import channel_for, format_report, rules_test
    from pm.domain.cel import ENGINES

    request = _pricing_request(arguments, arguments.currency or settings.wallet_currency)
    async with database_connection(settings) as connection:
        if arguments.channel is None:
            request = dataclasses.replace(
                request,
                channel=await channel_for(connection, request.operation_type, request.amount_minor, request.currency),
            )
        report = await rules_test(connection, request, ENGINES[arguments.engine]())
    print(json.dumps(report.to_json(), indent=2) if arguments.json else format_report(report))
    return EXIT_OK if report.refusal is None else EXIT_PROBLEM_FOUND


def _pricing_request(arguments: argparse.Namespace, currency: str) -> PricingRequest:
    from pm.domain.pricing import PricingRequest

    if arguments.op not in OperationType.__members__:
        raise CommandError(f"unknown operation type {arguments.op!r}; one of: {', '.join(OperationType.__members__)}")
    try:
        amount_minor = to_minor_units(arguments.amount, currency)
        at = datetime.fromisoformat(arguments.at) if arguments.at else datetime.now(UTC)
    except (SendError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return PricingRequest(
        operation_type=arguments.op,
        channel=arguments.channel,
        amount_minor=amount_minor,
        currency=currency,
        tags=[tag for tag in arguments.tags.split(",") if tag],
        sender_id=arguments.sender,
        recipient_id=arguments.recipient,
        at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
    )
