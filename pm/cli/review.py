"""`pm review list`: intents flagged for an operator (pm/store/reviews.py says why one is flagged).

A PSP reported a payout done for an intent the wallet had already failed: money may have moved outside
the wallet's books, so a person looks. The command only lists; nothing here changes an intent.
"""

from __future__ import annotations

import argparse
import json

from pm.cli.common import EXIT_OK, database_connection
from pm.config.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    review = commands.add_parser("review", help="intents an operator must look at").add_subparsers(
        required=True, metavar="COMMAND"
    )
    review_list = review.add_parser("list", help="intents flagged for review (a PSP paid what the wallet failed)")
    review_list.add_argument("--limit", type=int, default=100)
    review_list.add_argument("--json", action="store_true", help="print JSON")
    review_list.set_defaults(command=_review_list)


async def _review_list(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.store import reviews

    async with database_connection(settings) as connection:
        flagged = await reviews.list_flagged(connection, arguments.limit)
    if arguments.json:
        print(json.dumps(flagged, indent=2, default=str))
        return EXIT_OK
    for row in flagged:
        print(
            f"{row['id']}  {row['state']:8} {row['operation_type']:16} {row['amount_minor']} minor {row['currency']}"
            f"  {row['channel']}  {row['review_reason']}"
        )
    if not flagged:
        print("nothing to review")
    return EXIT_OK
