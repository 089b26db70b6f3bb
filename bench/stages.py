"""CPU per entry of each stage, one stage at a time, on real servers and an otherwise idle machine.

    python bench/stages.py                          # 3,000 P2P intents in batches of 25
    python bench/stages.py --intents 5000 --batch 50 --profile fees
    python bench/stages.py --ledger-url memory://   # without the `postgres` ledger's work

The end-to-end benchmark (bench/pipeline.py) runs every process at once on two cores, so a change of a
few microseconds per entry in one stage is lost in its run-to-run spread. This one creates the intents
(as the gateway's statement does), then runs the chain validation → fees → limits → dispatch →
settlement in this process, each stage's `StageRunner.process` over its whole stream in batches of
`--batch`, read from its consumer group as the fleet reads them, one stage after the other.

For each stage it prints the client's CPU per entry (this process's thread time: decoding, the handler,
the transition statement's client side, the ledger's client side, publishing), the servers' (every
PostgreSQL and Valkey process's CPU over the same span, from /proc: the embedded servers serve nothing
else) and the machine's speed just before (the reference loop). Autovacuum is off on the run's tables
and a `VACUUM ANALYZE` runs before each stage, outside the measured span, so vacuuming's CPU is in no
stage's figure and no stage runs on plans made while a table was nearly empty. History is fed by the
outbox worker, not by settlement, so it is not in the chain.

`--profile STAGE` prints that stage's cProfile (slower while on). `--ledger-url memory://` runs the
chain on the in-process ledger, leaving out the `postgres` ledger's work (what a TigerBeetle cluster
does instead, on machines of its own). The run ends by checking that every intent SETTLED and that
the ledger's invariants hold. `--floor` gives every stage the plumbing floor's handler (bench/floor.py:
the compare-and-set to the next state and nothing else), so the figures are the runtime's own cost.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.floor import handle as floor_handle
from bench.machine_speed import reference_ms
from consumers.bootstrap import open_stage_context
from consumers.context import StageContext
from consumers.runtime import StageRunner
from ledger.check import run_check
from pm.config.topology import parse_topology, renamed_document
from pm.dev.embedded import create_database, running_postgres, running_valkey
from pm.domain.intent import OperationType
from pm.redis import streams
from pm.store import intents
from pm.store.migrate import migrate

CHAIN = ("validation", "fees", "limits", "dispatch", "settlement")
INTENTS_MAX = 50_000
SENDERS = 100
FUNDING_MINOR = 10_000_000
AMOUNT_MINOR = 1_000
CREATE_BATCH = 500  # intents per create statement (the gateway's batcher writes up to this many at once)
SERVER_NAMES = ("postgres", "valkey-server")


class Figures(NamedTuple):
    stage: str
    entries: int
    client_us: float  # this process's CPU per entry
    server_us: float  # PostgreSQL's and Valkey's CPU per entry
    reference_loop_ms: float  # the machine's speed just before the stage ran (bench/machine_speed.py)


def server_cpu_s() -> float:
    """User and system CPU of every PostgreSQL and Valkey process on the machine, in seconds."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in SERVER_NAMES and process.info["cpu_times"] is not None:
            total += process.info["cpu_times"].user + process.info["cpu_times"].system
    return total


async def create(context: StageContext, operation_type: OperationType, parties: list[tuple[int | None, int]]) -> None:
    """Create one intent per (sender, recipient) as the gateway does, and its first stream entry."""
    for start in range(0, len(parties), CREATE_BATCH):
        chunk = parties[start : start + CREATE_BATCH]
        amount = FUNDING_MINOR if operation_type == OperationType.ADMIN_ADJUSTMENT else AMOUNT_MINOR
        outcomes = await intents.create_intents(
            context.pool,
            [
                intents.NewIntent(
                    api_key_id="bench-stages", idempotency_key=uuid.uuid4().hex, request_hash=b"bench",
                    operation_type=operation_type, amount_minor=amount, currency="THB", sender_id=sender,
                    recipient_id=recipient, operator_id=None, tags=(),
                )
                for sender, recipient in chunk
            ],
        )  # fmt: skip
        async with context.redis.pipeline(transaction=False) as pipe:
            for outcome in outcomes:
                assert outcome.created is not None
                pipe.xadd(context.topology.first_stage.stream, streams.entry_fields(outcome.created))
            await pipe.execute()


async def drain(runner: StageRunner, batch: int) -> int:
    """Run the stage over everything in its stream, `batch` entries a call; the entries handled."""
    stage, redis, handled = runner.stage, runner.context.redis, 0
    while True:
        read = await redis.xreadgroup(stage.group, runner.consumer, {stage.stream: ">"}, count=batch)
        if not read:
            return handled
        entries = read[0][1]
        outcome = await runner.process(entries)
        if outcome.failed or outcome.malformed or outcome.dependency_down is not None:
            raise RuntimeError(f"{stage.name}: a batch did not go through: {outcome}")
        handled += len(entries)


async def run_chain(context: StageContext, batch: int, profile: str | None, floor: bool = False) -> list[Figures]:
    """Each stage of CHAIN over its stream in turn, with the machine's speed just before it."""
    figures = []
    for name in CHAIN:
        runner = StageRunner(context.topology.stage(name), context, handler=floor_handle if floor else None)
        # What autovacuum does in production, here between the stages, so its CPU falls in none of them;
        # plans made while a table (the ledger's transfers before dispatch) was nearly empty would
        # otherwise scan it whole once it has grown.
        await context.pool.execute("VACUUM ANALYZE")
        reference_loop_ms = reference_ms()
        profiler = cProfile.Profile() if name == profile else None
        client_start, server_start = time.thread_time(), server_cpu_s()
        if profiler is not None:
            profiler.enable()
        handled = await drain(runner, batch)
        if profiler is not None:
            profiler.disable()
        client_s, server_s = time.thread_time() - client_start, server_cpu_s() - server_start
        per_entry = 1e6 / max(handled, 1)
        figures.append(Figures(name, handled, client_s * per_entry, server_s * per_entry, reference_loop_ms))
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return figures


async def stop_autovacuum(context: StageContext) -> None:
    """No autovacuum worker on this database's tables: its CPU would count in whichever stage it ran
    beside (and a worker that exits mid-stage takes its CPU out of the sum)."""
    tables = await context.pool.fetch(
        "SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables"
        " WHERE schemaname IN ('pm', 'tb_ledger')"
    )
    for table in tables:
        await context.pool.execute(f"ALTER TABLE {table['name']} SET (autovacuum_enabled = false)")


async def check_all_settled(context: StageContext, expected: int) -> None:
    """The run's checks (raised, not asserted: they hold under `python -O` too)."""
    counts = dict(await context.pool.fetch("SELECT state, count(*) FROM pm.intent GROUP BY state"))
    if counts != {"SETTLED": expected}:
        raise RuntimeError(f"every intent must be SETTLED, {expected}: {counts}")
    report = await run_check(context.ledger)
    if not report.ok:
        raise RuntimeError(f"the ledger's invariants do not hold: {report.problems}")


async def bench(server_url: str, redis_url: str, args: argparse.Namespace) -> list[Figures]:
    """Fund the senders, then measure `args.intents` P2P intents through CHAIN; the figures per stage."""
    database_url = await create_database(server_url, f"bench_stages_{uuid.uuid4().hex[:8]}", exist_ok=False)
    await migrate(database_url)
    ledger_url = args.ledger_url or database_url  # by default the `postgres` ledger in the run's database
    async with open_stage_context(database_url, redis_url, ledger_url) as context:
        context.topology = parse_topology(renamed_document(f"b{uuid.uuid4().hex[:8]}:"))
        await streams.ensure_groups(context.redis, context.topology)
        await stop_autovacuum(context)
        senders = [1_000_000 + n for n in range(SENDERS)]
        await create(context, OperationType.ADMIN_ADJUSTMENT, [(None, sender) for sender in senders])
        await run_chain(context, args.batch, None, args.floor)  # the funding, and every plan, warmed up
        pairs = [(senders[n % SENDERS], 2_000_000 + n % SENDERS) for n in range(args.intents)]
        await create(context, OperationType.P2P_TRANSFER, pairs)
        figures = await run_chain(context, args.batch, args.profile, args.floor)
        await check_all_settled(context, SENDERS + args.intents)
    return figures


def report(figures: list[Figures], args: argparse.Namespace) -> None:
    ledger = "none (the floor)" if args.floor else args.ledger_url.split(":")[0] if args.ledger_url else "postgres"
    print(f"== {args.intents:,} P2P intents, batches of {args.batch}, ledger {ledger}: µs of CPU per entry, by stage")
    print(f"   {'stage':<12}{'entries':>9}{'client':>9}{'servers':>9}   reference loop (ms; lower is faster)")
    for f in figures:
        print(f"   {f.stage:<12}{f.entries:>9,}{f.client_us:>9.1f}{f.server_us:>9.1f}   {f.reference_loop_ms}")
    total_client, total_server = sum(f.client_us for f in figures), sum(f.server_us for f in figures)
    print(f"   {'chain':<12}{'':>9}{total_client:>9.1f}{total_server:>9.1f}   (per intent, five stages)")
    print("   checks       all_settled ok, ledger_ok ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=3_000, help="P2P intents measured (default 3,000)")
    parser.add_argument("--batch", type=int, default=25, help="entries per batch, 1 to 500 (default 25)")
    parser.add_argument("--profile", choices=CHAIN, help="print this stage's cProfile")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="every stage with the plumbing floor's handler (bench/floor.py: the compare-and-set and nothing else)",
    )
    parser.add_argument(
        "--ledger-url",
        help="the ledger (default: the `postgres` backend in the run's database); `memory://` leaves the ledger's"
        " own work out, the stages' share of a TigerBeetle deployment; `tigerbeetle://…` (a cluster of its own)",
    )
    args = parser.parse_args()
    if not 1 <= args.batch <= 500 or not 1 <= args.intents <= INTENTS_MAX:
        parser.error(f"--batch is 1 to 500 and --intents 1 to {INTENTS_MAX:,}")
    directory = Path(tempfile.mkdtemp(prefix="pm-bench-stages-"))
    import uvloop

    with running_postgres(directory / "postgres") as server_url, running_valkey(directory / "valkey") as redis_url:
        report(uvloop.run(bench(server_url, redis_url, args)), args)


if __name__ == "__main__":
    main()
