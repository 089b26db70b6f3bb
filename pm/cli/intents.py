"""`pm intents show ID` and `pm intents stuck`: one intent as an operator needs to see it, and the
intents that are not moving.

`show` prints the intent, its versions with their times (pm.intent_event), its ledger transfers by their
derived ids (every leg its channel makes: pm/cli/reconciliation.py `intent_legs`) with what the ledger
has of each (absent; a hold pending, posted, voided or expired; a transfer created), its PSP events
and its webhooks (pm.outbox). `stuck` lists non-final intents created more than `--older-than` seconds
ago, oldest first. A malformed id or bound exits 2, an unknown intent 1, one line each.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pm.cli.common import EXIT_OK, EXIT_PROBLEM_FOUND, CommandError, connected, database, database_connection
from pm.cli.ledger import opened_ledger
from pm.config.settings import Settings

STUCK_OLDER_THAN_S_DEFAULT = 300
STUCK_LIMIT_DEFAULT = 100


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    intents = commands.add_parser("intents", help="one intent in full; intents that are not moving").add_subparsers(
        required=True, metavar="COMMAND"
    )
    show = intents.add_parser(
        "show", help="state, versions with times, ledger transfers by derived id, PSP events, webhooks"
    )
    show.add_argument("intent_id", metavar="ID", help="the intent's id (a uuid)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=_intents_show)
    stuck = intents.add_parser("stuck", help="non-final intents older than --older-than seconds, oldest first")
    stuck.add_argument(
        "--older-than", type=int, default=STUCK_OLDER_THAN_S_DEFAULT, metavar="N",
        help=f"seconds since the intent was created (default {STUCK_OLDER_THAN_S_DEFAULT})",
    )  # fmt: skip
    stuck.add_argument("--limit", type=int, default=STUCK_LIMIT_DEFAULT, help="most intents listed")
    stuck.add_argument("--json", action="store_true", help="print JSON")
    stuck.set_defaults(command=_intents_stuck)


def _intent_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise CommandError(f"{text!r} is not an intent id (a uuid)") from None


async def _intents_show(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.store import intent_report
    from pm.store.intents import load_intent

    intent_id = _intent_id(arguments.intent_id)  # before anything is opened
    async with database(settings) as database_url, connected(database_url) as connection:
        intent = await load_intent(connection, intent_id)
        if intent is None:
            raise CommandError(f"no intent {intent_id}", EXIT_PROBLEM_FOUND)
        flags = await intent_report.flags_of(connection, intent_id) or {}
        shown: dict[str, Any] = {
            "intent": {**intent.to_json(), "tags": list(intent.tags), **flags},
            "versions": await intent_report.events_of(connection, intent_id),
            "psp_events": await intent_report.psp_events_of(connection, intent_id),
            "webhooks": await intent_report.webhooks_of(connection, intent_id),
        }  # fmt: skip
        async with opened_ledger(settings.effective_ledger_url(database_url)) as ledger:
            shown["transfers"] = await _transfers(ledger, intent, settings.ledger_request_events_max)
    if arguments.json:
        print(json.dumps(shown, indent=2, default=str))
        return EXIT_OK
    _print_show(shown)
    return EXIT_OK


async def _transfers(ledger: Any, intent: Any, request_events_max: int) -> list[dict[str, Any]]:
    """Each leg the intent's channel makes, by derived id, with what the ledger has of it."""
    from pm.cli import reconciliation

    try:
        legs = reconciliation.intent_legs(intent)
    except (AssertionError, ValueError) as exc:
        return [{"id": None, "leg": f"(no transfers can be derived: {exc!r})", "status": "unknown"}]
    if legs is None:
        return []
    found = await reconciliation.lookup_transfers(ledger, sorted(legs.lookup_ids), request_events_max)
    ended = {i for i in legs.void_ids | legs.posting_ids if i in found}
    voided = any(i in found for i in legs.void_ids)
    rows = []
    for candidate in legs.candidates:
        got = found.get(candidate.id)
        if got is None and candidate.id not in {t.id for t in legs.expected_settled} | legs.void_ids:
            continue  # a leg of the copy with fees this intent has none of, and the ledger neither
        rows.append({
            "id": f"{candidate.id:032x}",
            "leg": reconciliation.describe(got or candidate, legs.account_names),
            "status": _status(got, candidate.id in legs.hold_ids, voided, bool(ended - legs.void_ids)),
            "timestamp": _time(got.timestamp) if got else None,
        })  # fmt: skip
    return rows


def _status(found: Any, is_hold: bool, voided: bool, posted: bool) -> str:
    import tigerbeetle as tb

    from pm.domain.intent import NS_PER_S

    if found is None:
        return "absent"
    if not is_hold or not found.flags & tb.TransferFlags.PENDING:
        return "created"
    if posted:
        return "hold posted"
    if voided:
        return "hold voided"
    expires_at_s = found.timestamp / NS_PER_S + found.timeout
    if found.timeout and time.time() >= expires_at_s:
        return "hold expired"
    return f"hold pending (expires {_time(int(expires_at_s * NS_PER_S)) if found.timeout else 'never'})"


def _time(timestamp_ns: int) -> str:
    return datetime.fromtimestamp(timestamp_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _print_show(shown: dict[str, Any]) -> None:
    intent = shown["intent"]
    error = f" {intent['error']['code']}: {intent['error']['message']}" if intent.get("error") else ""
    print(f"intent {intent['id']}: {intent['state']} v{intent['version']}{error}")
    parties = f"sender {intent['sender_id']} recipient {intent['recipient_id']} merchant {intent['merchant_id']}"
    print(f"  {intent['operation_type']} {intent['amount_minor']} minor {intent['currency']} via {intent['channel']};"
          f" fees pre {intent['fee_pre_minor']} post {intent['fee_post_minor']}; {parties}")  # fmt: skip
    flags = [name for name in ("needs_operator", "needs_review", "finished") if intent.get(name)]
    print(f"  created {intent['created_at']}, updated {intent['updated_at']}; flags: {', '.join(flags) or 'none'}")
    if intent.get("review_reason"):
        print(f"  review: {intent['review_reason']}")
    print("versions:")
    for event in shown["versions"]:
        error = f" {event['error_code']}: {event['error_message']}" if event["error_code"] else ""
        print(f"  v{event['version']} {event['state']:10} {event['created_at']}{error}")
    print("ledger transfers (derived ids):")
    for transfer in shown["transfers"] or [{"leg": "none: the intent has no channel", "status": "", "id": ""}]:
        print(
            f"  {transfer['leg']}: {transfer['status']}"
            + (f" at {transfer['timestamp']}" if transfer.get("timestamp") else "")
        )
    print("PSP events:" + ("" if shown["psp_events"] else " none"))
    for event in shown["psp_events"]:
        print(f"  {event['received_at']} {event['channel']} {event['event_id']}: {event['status']}")
    print("webhooks:" + ("" if shown["webhooks"] else " none"))
    for hook in shown["webhooks"]:
        state = f"next attempt {hook['next_attempt_at']}"
        if hook["delivered_at"] or hook["gave_up_at"]:
            state = "delivered" if hook["delivered_at"] else "GAVE UP"
        last = f"; last error: {hook['last_error']}" if hook["last_error"] else ""
        print(f"  #{hook['id']} {hook['kind']} v{hook['version']} merchant={hook['merchant_id']}"
              f" attempts={hook['attempts']} {state}{last}")  # fmt: skip


async def _intents_stuck(settings: Settings, arguments: argparse.Namespace) -> int:
    from pm.store.intent_report import STUCK_LISTED_MAX, stuck_intents

    if arguments.older_than < 0:
        raise CommandError(f"--older-than {arguments.older_than}: give seconds, 0 or more")
    if not 0 < arguments.limit <= STUCK_LISTED_MAX:
        raise CommandError(f"--limit {arguments.limit}: from 1 to {STUCK_LISTED_MAX}")
    async with database_connection(settings) as connection:
        rows = await stuck_intents(connection, arguments.older_than, arguments.limit)
    if arguments.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    for row in rows:
        flag = " needs_operator" if row["needs_operator"] else ""
        redriven = f" re-driven {row['redriven_at']}" if row["redriven_at"] else ""
        print(f"{row['id']}  {row['state']:10} v{row['version']}  {row['operation_type']} {row['amount_minor']}"
              f" {row['currency']}  age {row['age_s']:.0f}s  updated {row['updated_at']}{redriven}{flag}")  # fmt: skip
    more = " (the limit: more may wait, `--limit N`)" if len(rows) == arguments.limit else ""
    print(f"{len(rows)} non-final intent(s) older than {arguments.older_than} s{more}")
    return EXIT_OK
