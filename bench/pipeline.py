"""Pipeline throughput: signed intents (P2P, or a --mix with IPPS and QP) through the whole fleet, from
POST /intents to SETTLED.

    python bench/pipeline.py                                   # 5,000 intents at concurrency 64
    python bench/pipeline.py --floor                           # ... then the plumbing floor, and the ratio
    python bench/pipeline.py --processes settlement=2,dispatch=2 --batch-size 512 --json
    python bench/pipeline.py --layouts one-per-type,all,per-core --floor   # process layouts side by side
    python bench/pipeline.py --rate 1000 --seconds 20 --layouts per-core   # open loop at a fixed load

Layouts (bench/layouts.py): `one-per-type` is the Procfile, one process per type (or `--processes`);
`all` is `pm run all` in one process; `per-core` one `pm run all` per core; `stages` and `two-groups`
the gateway and the outbox worker with the stages in one or two processes. Each runs (and, with
`--floor`, its floor) in turn in the same invocation, and a side-by-side table ends the output.
Open loop (`--rate N --seconds S`, bench/open_loop.py): N x S intents, each sent when due whatever
the answers, latency counted from when it was due; the send lag p99 printed beside it says whether
the client kept the schedule. Each run also reports every process type's RSS after sending.

With no PM_DATABASE_URL / PM_REDIS_URL it starts embedded PostgreSQL and Valkey in a temp dir (stopped
at the end, also on Ctrl-C); with them set, it creates its databases on that PostgreSQL server (and
drops them at the end) and uses that Redis with streams of its own. Per run:

1. a fresh migrated database (also the `postgres` ledger) holding a history of `--history` finished
   intents (default 100,000; bench/seed.py), VACUUM ANALYZEd, so PostgreSQL plans as on a production
   database; two API keys, a streams.yaml of its own (unique stream names; `--batch-size` /
   `--block-ms` / `--linger-ms` override every stage);
2. the Procfile's process types started as separate processes by `pm.dev.fleet.Fleet` (counts from
   `--processes`, default one of each), each stage process serving /metrics on its own $PORT;
3. /readyz, then `--senders` users funded with ADMIN_ADJUSTMENT through the pipeline (enough that
   every payment settles; this is also the warm-up), then a pause so PostgreSQL's statistics settle;
4. N signed P2P intents (`--intents`) at concurrency C (`--concurrency`), no Prefer: wait, each POST's
   start time recorded; then wait (bounded) until all are SETTLED, finished, and fed by the outbox
   worker (status messages published, history written);
5. figures: accepted/s = N / (last 202 - first POST); settled/s = N / (last SETTLED - first POST), the
   SETTLED times being `pm.intent_event.created_at`; latency p50/p95/p99 = that SETTLED time minus the
   intent's own POST start; PostgreSQL commits per intent = `pg_stat_database.xact_commit` delta of the
   bench database over the run / N (the bench's own monitoring queries subtracted); write
   transactions per intent (transaction ids consumed, server-wide); mean ledger batch size =
   sum/count of `pm_ledger_request_events{operation="create_transfers"}` over every stage process, and
   the mean time of one such request (`pm_ledger_request_seconds`); mean entries per stage batch
   (`pm_stage_batch_entries`) and mean time per stage batch (`pm_stage_batch_seconds`); the hops: p50
   and p99 of POST -> the first state, then of each state -> the next (`pm.intent_event` in version
   order), which say where POST -> SETTLED goes; the cyclic garbage collector's collections
   per generation (`python_gc_collections_total`, every scraped process: all but the gateway); CPU
   seconds per process type;
6. verification: all N intents SETTLED, no entry left in any stream (pending or undelivered), and
   (real run) `ledger.check.run_check` ok, i.e. debits = credits and transit back to zero.

With `--floor` the same invocation then runs the plumbing floor the same way: a second fleet, on a
second fresh database, whose stages use `bench.floor` (no ledger, no routes, no fees: one batched SQL
update per stage; the history stage keeps its own handler, which ends each intent) and streams of
their own, the same warm-up and the same N intents; it
prints floor settled/s and the ratio real/floor.

Target on the 2-core machine (the benchmark issue): >= 1,000 P2P intents/s settled on the embedded
servers; the goal beyond it is 2,000. The client runs on the same machine and shares its cores: it is
bench/http_load.py (signed with pm.domain.signing like pm.client, plain keep-alive HTTP/1.1, about a third of
aiohttp's client CPU per request), and its CPU is reported beside the fleet's: CPU per intent is given for
the whole machine and for PM alone (the fleet's processes and the servers, without the client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg
import psutil
import redis.asyncio as aioredis
import uvloop
import yaml
from http_load import HttpLoadError, SignedConnection  # bench/, beside this file
from layouts import LAYOUTS, layout_counts, parse_layouts
from machine_speed import reference_ms
from mix import AMOUNT_MINOR, CURRENCY, SENDER_ID_BASE, Mix, intent_body, parse_mix
from open_loop import ClientBehind, schedule, send_open_loop
from prometheus_client.parser import text_string_to_metric_families
from seed import HISTORY_INTENTS_DEFAULT, HISTORY_INTENTS_MAX, seed_history

from ledger import open_ledger
from ledger.check import run_check
from pm.client import PMApiError, PMClient
from pm.config.constants import KEY_REQUESTS_PER_S_MAX
from pm.config.topology import Topology, parse_topology, renamed_document
from pm.dev.embedded import create_database, running_postgres, running_valkey
from pm.dev.fleet import Fleet, read_procfile
from pm.psp.secrets import SIMULATOR_ENVIRONMENT
from pm.redis import streams
from pm.redis.wire import redis_from_url
from pm.store import keys
from pm.store.migrate import migrate

HTTP_TIMEOUT_S = 30.0
ADMIN_OPERATOR_ID = 1
APP_SCOPES = "intents:write,intents:read,balance:read"
ADMIN_SCOPES = "admin,intents:read"
APP_OPERATIONS = "P2P_TRANSFER,IPPS_WITHDRAWAL,QP_TOPUP"  # what --mix may send (bench/mix.py)
ADMIN_OPERATIONS = "ADMIN_ADJUSTMENT"  # and funds its users
FLOOR_HANDLER = "bench.floor"
# The floor's history stage is the real one: it ends an intent (`finished`), which the run waits for.
FLOOR_KEEPS_HANDLER = ("history",)
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

READY_TIMEOUT_S = 60.0
FUNDING_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0  # after the last SETTLED: finished and fed, nothing pending in any stream
POLL_INTERVAL_S = 0.25
# A PostgreSQL 15+ backend flushes its statistics at most once a second while busy, and an idle one
# up to 10 s after its last transaction: waiting this long after the warm-up makes the xact_commit
# baseline exact (nothing of the warm-up is still unflushed).
STATS_SETTLE_S = 10.5
STATS_FLUSH_AFTER_STOP_S = 1.0  # exiting backends flush their statistics; give them a moment
SCRAPE_TIMEOUT_S = 5.0
PROCESS_TYPES_WITHOUT_METRICS = ("gateway",)  # the gateway serves /metrics on its HTTP port instead
RSS_GROWTH_PCT_MAX = 10.0  # the bound: RSS after 100,000 intents within 10% of it after 10,000
MACHINE = "machine busy"
OTHER = "other (not this run)"
CLIENT = "bench client"


class BenchError(Exception):
    """The run did not do what it must (an intent refused or unfinished, a process died, a check failed)."""


# -- configuration ---------------------------------------------------------------------------------


def parse_counts(text: str) -> dict[str, int]:
    """`gateway=1,settlement=2` over the default of one process per Procfile type."""
    types = list(read_procfile())
    counts = dict.fromkeys(types, 1)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = item.partition("=")
        if not separator or name.strip() not in counts or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected TYPE=COUNT with TYPE one of {', '.join(types)}; got {item!r}")
        counts[name.strip()] = int(value)
    for required in ("gateway", *(t for t in types if t not in ("gateway", "poller"))):
        if counts[required] < 1:
            raise argparse.ArgumentTypeError(f"{required} needs at least one process")
    return counts


def bench_ledger_url(database_url: str) -> str:
    """The fleet's ledger: the TigerBeetle cluster at PM_TIGERBEETLE_ADDRESSES when set (a cluster of the
    bench's own: its accounts outlive the run, and the bench's users are the same every run, so the
    ledger check reads every account there), else the `postgres` backend on the run's own database."""
    addresses = os.environ.get("PM_TIGERBEETLE_ADDRESSES")
    if addresses:
        return f"tigerbeetle://{addresses}?cluster={os.environ.get('PM_TIGERBEETLE_CLUSTER_ID', '0')}"
    return database_url


def write_streams_file(directory: Path, handler: str | None, overrides: dict[str, Any]) -> tuple[Path, Topology]:
    """streams.yaml with streams of its own (and `handler` for every stage that moves an intent to its
    next state: the floor; the history stage keeps its own, which marks intents `finished`)."""
    document = renamed_document(f"bench{uuid.uuid4().hex[:10]}:", **overrides)
    if handler is not None:
        for name, stage in document["stages"].items():
            if name not in FLOOR_KEEPS_HANDLER and "connector_for" not in stage:
                stage["handler"] = handler
    path = directory / "streams.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, parse_topology(document)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_range(count: int, taken: set[int]) -> int:
    """The first of `count` consecutive free ports (none in `taken`)."""
    for _ in range(200):
        base = free_port()
        ports = range(base, base + count)
        if base + count > 65535 or taken & set(ports):
            continue
        if all(_port_free(port) for port in ports):
            taken.update(ports)
            return base
    raise BenchError(f"no {count} consecutive free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- measurements ------------------------------------------------------------------------------------


@dataclass
class Monitor:
    """The bench's own connection to the bench database; counts its statements (each is a transaction
    that `xact_commit` counts too, and is subtracted)."""

    connection: asyncpg.Connection
    statements: int = 0

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.statements += 1
        return await self.connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        self.statements += 1
        row = await self.connection.fetchrow(query, *args)
        assert row is not None
        return row


async def transaction_counters(database_url: str) -> tuple[int, int]:
    """(xact_commit of this database, next transaction id of the server), on a connection of its own."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,"
            " pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid"
        )
        assert row is not None
        return int(row["commits"]), int(row["next_xid"])
    finally:
        await connection.close(timeout=10)


@dataclass
class Scrape:
    """Sums and counts of the histograms we read, over every stage process."""

    ledger_sum: float = 0.0
    ledger_count: float = 0.0
    ledger_seconds: float = 0.0  # create_transfers requests' time, summed
    batch_sum: dict[str, float] = field(default_factory=dict)
    batch_count: dict[str, float] = field(default_factory=dict)
    batch_seconds: dict[str, float] = field(default_factory=dict)  # by stage: its batches' time, summed
    gc_collections: dict[str, float] = field(default_factory=dict)  # by generation, "0" to "2"

    def minus(self, earlier: Scrape) -> Scrape:
        return Scrape(
            self.ledger_sum - earlier.ledger_sum,
            self.ledger_count - earlier.ledger_count,
            self.ledger_seconds - earlier.ledger_seconds,
            {k: v - earlier.batch_sum.get(k, 0.0) for k, v in self.batch_sum.items()},
            {k: v - earlier.batch_count.get(k, 0.0) for k, v in self.batch_count.items()},
            {k: v - earlier.batch_seconds.get(k, 0.0) for k, v in self.batch_seconds.items()},
            {k: v - earlier.gc_collections.get(k, 0.0) for k, v in self.gc_collections.items()},
        )


async def scrape(session: aiohttp.ClientSession, ports: list[int]) -> Scrape:
    result = Scrape()
    for port in ports:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("pm_ledger_request_events_"):
                    if sample.labels.get("operation") != "create_transfers":
                        continue
                    if sample.name.endswith("_sum"):
                        result.ledger_sum += sample.value
                    elif sample.name.endswith("_count"):
                        result.ledger_count += sample.value
                elif sample.name == "pm_ledger_request_seconds_sum":
                    if sample.labels.get("operation") == "create_transfers":
                        result.ledger_seconds += sample.value
                elif sample.name == "pm_stage_batch_seconds_sum":
                    stage = sample.labels["stage"]
                    result.batch_seconds[stage] = result.batch_seconds.get(stage, 0.0) + sample.value
                elif sample.name.startswith("pm_stage_batch_entries_"):
                    stage = sample.labels["stage"]
                    if sample.name.endswith("_sum"):
                        result.batch_sum[stage] = result.batch_sum.get(stage, 0.0) + sample.value
                    elif sample.name.endswith("_count"):
                        result.batch_count[stage] = result.batch_count.get(stage, 0.0) + sample.value
                elif sample.name == "python_gc_collections_total":
                    generation = sample.labels["generation"]
                    result.gc_collections[generation] = result.gc_collections.get(generation, 0.0) + sample.value
    return result


@dataclass
class ServerPids:
    """The server processes this run uses, when they run on this machine (None: not measurable here)."""

    postmaster: int | None
    valkey: int | None


async def server_pids(monitor: Monitor, redis: aioredis.Redis) -> ServerPids:
    postmaster = valkey = None
    with contextlib.suppress(psutil.Error, AttributeError):
        backend = psutil.Process(int((await monitor.fetchrow("SELECT pg_backend_pid() AS pid"))["pid"]))
        postmaster = backend.parent().pid
    with contextlib.suppress(psutil.Error, KeyError, ValueError):
        pid = int((await redis.info("server"))["process_id"])
        valkey = pid if psutil.pid_exists(pid) else None
    return ServerPids(postmaster, valkey)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def cpu_seconds(fleet: Fleet, servers: ServerPids) -> dict[str, float]:
    """CPU seconds (user + system) so far: per process type, the servers, this client, and the machine.

    PostgreSQL counts the postmaster and its children alive now (a backend that exits meanwhile is
    missed, the bench's fleet keeps its pools open); "other" below is what none of these account for.
    """
    seconds: dict[str, float] = {}
    for process_type, processes in fleet.processes.items():
        for process in processes:
            with contextlib.suppress(psutil.Error):
                seconds[process_type] = seconds.get(process_type, 0.0) + _cpu(psutil.Process(process.pid))
    if servers.postmaster is not None:
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(servers.postmaster)
            total = _cpu(postmaster)
            for child in postmaster.children():
                with contextlib.suppress(psutil.Error):
                    total += _cpu(child)
            seconds["postgres"] = total
    if servers.valkey is not None:
        with contextlib.suppress(psutil.Error):
            seconds["valkey"] = _cpu(psutil.Process(servers.valkey))
    seconds[CLIENT] = _cpu(psutil.Process())
    machine = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq")  # not steal: another VM's time
    seconds[MACHINE] = sum(getattr(machine, name, 0.0) for name in busy)
    return seconds


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
    delta[OTHER] = round(delta[MACHINE] - sum(v for k, v in delta.items() if k != MACHINE), 2)
    return delta


def pm_cpu_seconds(cpu: dict[str, float]) -> float:
    """PM's own CPU: the fleet's processes and its servers, without the bench client (the callers' side,
    on their own machines in production) or the rest of the machine."""
    return round(sum(v for k, v in cpu.items() if k not in (MACHINE, OTHER, CLIENT)), 2)


def rss_by_type(fleet: Fleet) -> dict[str, float]:
    """Resident memory per process type (each process with its children), in MiB, summed over its processes."""
    totals: dict[str, float] = {}
    for process_type, processes in fleet.processes.items():
        for popen in processes:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(popen.pid)
                rss = process.memory_info().rss + sum(
                    child.memory_info().rss for child in process.children(recursive=True)
                )
                totals[process_type] = totals.get(process_type, 0.0) + rss / 2**20
    return {name: round(value, 1) for name, value in totals.items()}


@dataclass
class RssSampler:
    """Reads every process type's RSS when the settled count passes each checkpoint (once a second, on a
    connection of its own, its statements counted so they come off the fleet's commits)."""

    connection: asyncpg.Connection
    api_key_id: str  # the run's intents are this key's (not the seeded history's, bench/seed.py)
    statements: int = 0

    async def run(self, fleet: Fleet, checkpoints: tuple[int, ...], out: dict[int, dict[str, float]]) -> None:
        waiting = sorted(checkpoints)
        while waiting:
            self.statements += 1
            settled = await self.connection.fetchval(
                "SELECT count(*) FROM pm.intent WHERE api_key_id = $1 AND state = 'SETTLED'", self.api_key_id
            )
            while waiting and settled >= waiting[0]:
                out[waiting.pop(0)] = rss_by_type(fleet)
            await asyncio.sleep(1.0)


def latency_by_kind(rows: list[asyncpg.Record], sent: SendResult) -> dict[str, dict[str, float]]:
    """Per operation type: intents settled, settled/s over the run, POST->SETTLED p50 and p99 in ms."""
    kinds: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        kinds.setdefault(row["operation_type"], []).append(row)
    figures = {}
    for kind, kind_rows in sorted(kinds.items()):
        latencies = sorted(r["created_at"].timestamp() - sent.started_at[str(r["intent_id"])] for r in kind_rows)
        last = max(r["created_at"].timestamp() for r in kind_rows)
        figures[kind] = {
            "settled": len(kind_rows),
            "settled_per_s": round(len(kind_rows) / (last - sent.first_post_at)),
            **p50_p99_ms(latencies),
        }
    return figures


def p50_p99_ms(sorted_s: list[float]) -> dict[str, float]:
    """p50 and p99 in ms, to 0.1 ms, of an ascending list of seconds."""
    return {
        "p50_ms": round(percentile(sorted_s, 0.50) * 1000, 1),
        "p99_ms": round(percentile(sorted_s, 0.99) * 1000, 1),
    }


def latency_by_hop(rows: list[asyncpg.Record], sent: SendResult) -> dict[str, dict[str, float]]:
    """Per step of the intents' path (POST -> first state, then each state -> the next, in version
    order): p50 and p99 in ms. Where POST -> SETTLED goes, hop by hop."""
    paths: dict[str, list[tuple[int, float, str]]] = {}
    for row in rows:
        paths.setdefault(str(row["intent_id"]), []).append(
            (row["version"], row["created_at"].timestamp(), row["state"])
        )
    steps: dict[str, list[float]] = {}
    for intent_id, events in paths.items():
        events.sort()
        previous_at, previous = sent.started_at[intent_id], "POST"
        for _, at, state in events:
            steps.setdefault(f"{previous}->{state}", []).append(at - previous_at)
            previous_at, previous = at, state
    return {step: p50_p99_ms(sorted(waits)) for step, waits in steps.items()}


def rss_growth(rss_at: dict[int, dict[str, float]]) -> dict[str, float]:
    """Per process type: RSS growth in % from the first checkpoint to the last (the issue: within 10%)."""
    if len(rss_at) < 2:
        return {}
    first, last = rss_at[min(rss_at)], rss_at[max(rss_at)]
    return {name: round(100 * (last[name] - first[name]) / first[name], 1) for name in first if name in last}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    assert sorted_values
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    name: str  # "LAYOUT pipeline" or "LAYOUT floor"
    layout: str
    rate_per_s: float | None  # None: closed loop at `concurrency`; else open loop, `intents` = rate x seconds
    handler: str | None  # None: the real handlers of streams.yaml
    intents: int
    concurrency: int
    senders: int
    counts: dict[str, int]
    stage_overrides: dict[str, Any]
    finish_timeout_s: float
    stats_settle_s: float
    log_dir: Path
    mix: Mix = (("p2p", 100),)
    rss_checkpoints: tuple[int, ...] = ()  # settled counts at which every process type's RSS is read
    history: int = HISTORY_INTENTS_DEFAULT  # finished intents in the database before the fleet starts


@dataclass
class SendResult:
    started_at: dict[str, float]  # intent id -> wall-clock time its POST started (open loop: was due)
    first_post_at: float
    last_accepted_at: float
    send_lag_s: list[float] = field(default_factory=list)  # open loop: per intent, sent minus due


async def post_intent(connection: SignedConnection, index: int, senders: int, mix: Mix) -> str:
    """POST intent `index` (bench/mix.py); its id. Anything but 202 CREATED ends the run."""
    sender, body = intent_body(index, senders, mix)
    try:
        answer = await connection.post_json("/intents", body, user_id=sender)
    except (OSError, TimeoutError, HttpLoadError) as exc:
        raise BenchError(f"intent {index} got no answer from the gateway: {exc!r}") from exc
    if answer.status != 202 or answer.body.get("state") != "CREATED":
        raise BenchError(f"intent {index}: expected 202 CREATED, got {answer.status} {answer.body}")
    return str(answer.body["id"])


async def send_open(
    connect: Callable[[], SignedConnection], rate_per_s: float, count: int, senders: int, mix: Mix
) -> SendResult:
    """`count` P2P intents at `rate_per_s`, each sent when due whatever the answers (bench/open_loop.py)."""
    due = schedule(rate_per_s, count / rate_per_s, time.time() + 0.1)
    started_at: dict[str, float] = {}
    last_accepted_at = 0.0

    async def send(connection: SignedConnection, index: int) -> None:
        nonlocal last_accepted_at
        started_at[await post_intent(connection, index, senders, mix)] = due[index]
        last_accepted_at = max(last_accepted_at, time.time())

    try:
        result = await send_open_loop(due, connect, send)
    except ClientBehind as exc:
        raise BenchError(str(exc)) from exc
    assert len(started_at) == count, f"{len(started_at)} of {count} intents answered"
    return SendResult(started_at, due[0], last_accepted_at, result.send_lag_s)


async def send_intents(
    connect: Callable[[], SignedConnection], count: int, concurrency: int, senders: int, mix: Mix
) -> SendResult:
    """`count` P2P intents, `concurrency` at a time (a keep-alive connection each); any refusal ends the run."""
    started_at: dict[str, float] = {}
    next_index = 0
    last_accepted_at = 0.0
    first_post_at = time.time()

    async def worker() -> None:
        nonlocal next_index, last_accepted_at
        connection = connect()
        try:
            while next_index < count:
                index = next_index
                next_index += 1
                start = time.time()
                intent_id = await post_intent(connection, index, senders, mix)
                started_at[intent_id] = start
                last_accepted_at = max(last_accepted_at, time.time())
        finally:
            await connection.close()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, count)):
                group.create_task(worker())
    except* BenchError as failures:
        raise failures.exceptions[0] from None
    assert len(started_at) == count, f"{len(started_at)} of {count} intents answered"
    return SendResult(started_at, first_post_at, last_accepted_at)


async def fund_senders(admin: PMClient, monitor: Monitor, senders: int, amount_minor: int, concurrency: int) -> None:
    """One ADMIN_ADJUSTMENT per sender through the pipeline; waits until all are final (bounded)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def fund(user_id: int) -> str:
        async with semaphore:
            try:
                body = await admin.create_intent(
                    operation_type="ADMIN_ADJUSTMENT", amount_minor=amount_minor, currency=CURRENCY,
                    recipient_id=user_id, user_id=ADMIN_OPERATOR_ID,
                )  # fmt: skip
            except (PMApiError, aiohttp.ClientError, TimeoutError) as exc:
                raise BenchError(f"funding user {user_id} failed: {exc!r}") from exc
            return body["id"]

    await asyncio.gather(*(fund(SENDER_ID_BASE + i) for i in range(senders)))
    deadline = time.monotonic() + FUNDING_TIMEOUT_S
    while True:
        row = await monitor.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'SETTLED' AND finished) AS done,"
            " count(*) FILTER (WHERE state IN ('REJECTED', 'FAILED')) AS refused"
            " FROM pm.intent WHERE operation_type = 'ADMIN_ADJUSTMENT'"
        )
        if row["refused"]:
            raise BenchError(f"{row['refused']} funding intents were refused")
        if row["done"] == senders:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"funding: {senders - row['done']} of {senders} not settled after {FUNDING_TIMEOUT_S} s")
        await asyncio.sleep(POLL_INTERVAL_S)


def check_alive(fleet: Fleet) -> None:
    """Every process started is still running (a stage or gateway that exits fails the run)."""
    for process_type, processes in fleet.processes.items():
        for number, process in enumerate(processes, start=1):
            if process.poll() is not None:
                log = fleet.log_dir / f"{process_type}.{number}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise BenchError(f"{process_type} #{number} exited with {process.returncode}:\n{tail}")


async def wait_settled(monitor: Monitor, fleet: Fleet, api_key_id: str, count: int, timeout_s: float) -> None:
    """Until all `count` intents of the app key are SETTLED; fails on a refusal, a dead process or the
    time bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await monitor.fetch(
            "SELECT state, count(*) AS n FROM pm.intent WHERE api_key_id = $1 GROUP BY state", api_key_id
        )
        states = {row["state"]: row["n"] for row in rows}
        if states.get("SETTLED", 0) == count:
            return
        refused = states.get("REJECTED", 0) + states.get("FAILED", 0)
        if refused:
            raise BenchError(f"{refused} intents were not settled: {states}")
        check_alive(fleet)
        if time.monotonic() > deadline:
            raise BenchError(
                f"{count - states.get('SETTLED', 0)} of {count} intents not SETTLED {timeout_s:.0f} s after the "
                f"last was accepted; states: {states}"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_drained(monitor: Monitor, redis: aioredis.Redis, topology: Topology) -> None:
    """Until every intent is finished, the outbox feed has delivered every event (statuses, history)
    and no stream holds an unacknowledged entry; then no dead-letter stream may hold an entry either."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        row = await monitor.fetchrow("SELECT count(*) AS n FROM pm.intent WHERE NOT finished")
        unfed = await monitor.fetchrow(
            "SELECT count(*) AS n FROM pm.intent_event e JOIN pm.outbox_cursor c ON c.name = 'app'"
            " WHERE (e.xid, e.intent_id, e.version) > (c.xid, c.intent_id, c.version)"
        )
        left = {}
        for stage in topology.stages.values():
            backlog = await streams.backlog(redis, stage.stream, stage.group)
            if backlog is None:
                raise BenchError(f"stream {stage.stream} or its group {stage.group} is missing")
            if backlog.lag or backlog.pending:
                left[stage.name] = {"undelivered": backlog.lag, "pending": backlog.pending}
        if unfed["n"]:
            left["outbox feed"] = {"undelivered": unfed["n"]}
        if row["n"] == 0 and not left:
            dead = {stage.name: await redis.xlen(stage.dead_letter_stream) for stage in topology.stages.values()}
            if any(dead.values()):
                raise BenchError(f"entries in dead-letter streams: {dead}")
            return
        if time.monotonic() > deadline:
            raise BenchError(f"not drained after {DRAIN_TIMEOUT_S} s: {row['n']} not finished; {left}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_ready(base_url: str, metrics_ports: list[int], fleet: Fleet) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = [f"{base_url}/readyz", *(f"http://127.0.0.1:{p}/metrics" for p in metrics_ports)]
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while waiting:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(waiting[0]) as response:
                    if response.status == 200:
                        waiting.pop(0)
                        continue
            check_alive(fleet)
            if time.monotonic() > deadline:
                raise BenchError(f"not ready within {READY_TIMEOUT_S} s: {waiting[0]}\n{fleet.logs('gateway')[-3000:]}")
            await asyncio.sleep(0.2)


async def run_once(options: RunOptions, server_url: str, redis_url: str, databases: list[str]) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    database_url = await create_database(server_url, name, exist_ok=False)
    databases.append(name)
    await migrate(database_url)
    ledger_url = bench_ledger_url(database_url)
    progress(f"{options.name}: {options.history:,} finished intents of history in the database (bench/seed.py)")
    await seed_history(database_url, options.history, ledger_url if ledger_url == database_url else None)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        # The bench measures the pipeline, not the per-key rate (bench/rate_limit.py does): no limit in the way.
        app_key, app_secret = await keys.create_key(
            pool, name="bench-app", scopes=APP_SCOPES, operations=APP_OPERATIONS, requests_per_s=KEY_REQUESTS_PER_S_MAX
        )
        admin_key, admin_secret = await keys.create_key(
            pool, name="bench-admin", scopes=ADMIN_SCOPES, operations=ADMIN_OPERATIONS
        )
    finally:
        await pool.close()

    run_dir = options.log_dir / options.name
    run_dir.mkdir(parents=True)
    streams_file, topology = write_streams_file(run_dir, options.handler, options.stage_overrides)
    http_port = free_port()
    psp_sim_port = free_port()
    taken = {http_port, psp_sim_port}
    environment = {
        "PM_DATABASE_URL": database_url,
        "PM_REDIS_URL": redis_url,
        "PM_LEDGER_URL": ledger_url,
        "PM_STREAMS_FILE": str(streams_file),
        "PM_HTTP_PORT": str(http_port),
        "PM_PSP_SIM_PORT": str(psp_sim_port),  # the Procfile's PSP simulator, on a port of its own
        # ... and the fleet's PSPs are that simulator, with its public secrets (they have no default, and
        # a process whose PSPs are not the local simulator refuses them: pm/psp/secrets.py).
        "PM_PSP_IPPS_URL": f"http://127.0.0.1:{psp_sim_port}/ipps",
        "PM_PSP_QP_URL": f"http://127.0.0.1:{psp_sim_port}/qp",
        **SIMULATOR_ENVIRONMENT,
        "PM_LOG_LEVEL": "WARNING",
        # The floor's handlers live in bench/, which is no installed package: the repository root on the path.
        "PYTHONPATH": str(REPOSITORY_ROOT),
    }
    fleet = Fleet(environment=environment, log_dir=run_dir)
    procfile = read_procfile()
    metrics_ports: list[int] = []
    redis = redis_from_url(redis_url, socket_timeout=10)
    monitor: Monitor | None = None
    try:
        progress(f"{options.name}: starting the fleet ({run_dir})")
        for process_type, count in options.counts.items():
            if count == 0:
                continue
            # A type that is no Procfile line (`all`, a comma-separated group) is started as `pm run TYPE`.
            command = None if process_type in procfile else f"pm run {process_type}"
            if process_type in PROCESS_TYPES_WITHOUT_METRICS:
                fleet.start(process_type, count)
            else:
                port_base = free_port_range(count, taken)
                fleet.start(process_type, count, port_base=port_base, command=command)
                metrics_ports.extend(range(port_base, port_base + count))
        base_url = f"http://127.0.0.1:{http_port}"
        await wait_ready(base_url, metrics_ports, fleet)
        await asyncio.sleep(1.0)  # a second gateway that cannot bind dies just after the first answers
        check_alive(fleet)
        monitor = Monitor(await asyncpg.connect(database_url, timeout=10))
        pids = await server_pids(monitor, redis)

        # Every P2P intent of a sender is covered twice over: no payment can fail for lack of funds.
        per_sender = math.ceil(options.intents / options.senders)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=max(options.concurrency, 8)),
        )
        scrape_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S))
        async with (
            session,
            scrape_session,
            PMClient(base_url, admin_key.key_id, admin_secret, session=session) as admin,
        ):
            progress(f"{options.name}: ready; funding {options.senders} senders (the warm-up)")
            await fund_senders(admin, monitor, options.senders, 2 * per_sender * AMOUNT_MINOR, options.concurrency)
            progress(f"{options.name}: funded; {options.stats_settle_s} s for PostgreSQL's statistics to settle")
            await asyncio.sleep(options.stats_settle_s)

            commits_before, xid_before = await transaction_counters(database_url)
            monitor.statements = 0
            scrape_before = await scrape(scrape_session, metrics_ports)
            reference_before_ms = reference_ms()
            loop = (f"at concurrency {options.concurrency}" if options.rate_per_s is None
                    else f"at {options.rate_per_s:g}/s (open loop)")  # fmt: skip
            progress(f"{options.name}: sending {options.intents} intents {loop}")
            cpu_before, cpu_from = cpu_seconds(fleet, pids), time.time()

            def connect() -> SignedConnection:
                return SignedConnection("127.0.0.1", http_port, app_key.key_id, app_secret, HTTP_TIMEOUT_S)

            rss_at: dict[int, dict[str, float]] = {}
            sampler = RssSampler(await asyncpg.connect(database_url, timeout=10), app_key.key_id)
            sampling = asyncio.create_task(sampler.run(fleet, options.rss_checkpoints, rss_at))
            try:
                senders, mix = options.senders, options.mix
                if options.rate_per_s is None:
                    sent = await send_intents(connect, options.intents, options.concurrency, senders, mix)
                else:
                    sent = await send_open(connect, options.rate_per_s, options.intents, senders, mix)
                rss_mb = rss_by_type(fleet)
                progress(f"{options.name}: all accepted; waiting for SETTLED")
                await wait_settled(monitor, fleet, app_key.key_id, options.intents, options.finish_timeout_s)
                for checkpoint in options.rss_checkpoints:  # those passed since the sampler's last look
                    if checkpoint <= options.intents and checkpoint not in rss_at:
                        rss_at[checkpoint] = rss_by_type(fleet)
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
                await sampler.connection.close(timeout=10)
            monitor.statements += sampler.statements  # its transactions are the bench's, not the fleet's
            cpu_after, cpu_to = cpu_seconds(fleet, pids), time.time()
            reference_after_ms = reference_ms()
            progress(f"{options.name}: all settled; checking")
            await wait_drained(monitor, redis, topology)
            scrape_delta = (await scrape(scrape_session, metrics_ports)).minus(scrape_before)

        events = await monitor.fetch(
            "SELECT e.intent_id, e.version, e.state, e.created_at, i.operation_type FROM pm.intent_event e"
            " JOIN pm.intent i ON i.id = e.intent_id WHERE i.api_key_id = $1",
            app_key.key_id,
        )
        rows = [event for event in events if event["state"] == "SETTLED"]
        assert len(rows) == options.intents, f"{len(rows)} SETTLED events for {options.intents} intents"
        latencies_s = sorted(row["created_at"].timestamp() - sent.started_at[str(row["intent_id"])] for row in rows)
        last_settled_at = max(row["created_at"].timestamp() for row in rows)
        by_kind = latency_by_kind(rows, sent)
        by_hop = latency_by_hop(events, sent)
        own_statements = monitor.statements

        ledger_ok: bool | None = None
        if options.handler is None:
            async with open_ledger(ledger_url) as ledger:
                report = await run_check(ledger)
            if not report.ok:
                raise BenchError(f"ledger check failed: {report.problems}")
            ledger_ok = True
    finally:
        # Synchronous on purpose: also runs to completion while the run is being cancelled (Ctrl-C).
        fleet.stop()
        if monitor is not None:
            await monitor.connection.close(timeout=10)
        await redis.aclose()

    await asyncio.sleep(STATS_FLUSH_AFTER_STOP_S)
    commits_after, xid_after = await transaction_counters(database_url)
    commits = commits_after - commits_before - own_statements
    n = options.intents
    accept_s = sent.last_accepted_at - sent.first_post_at
    settle_s = last_settled_at - sent.first_post_at
    lags_s = sorted(sent.send_lag_s)
    return {
        "run": options.name,
        "layout": options.layout,
        "ledger": ledger_url.split("://", 1)[0],
        "loop": "closed" if options.rate_per_s is None else "open",
        "offered_per_s": options.rate_per_s,
        "send_lag_ms_p99": round(percentile(lags_s, 0.99) * 1000, 1) if lags_s else None,
        "rss_mb": rss_mb,
        "by_operation": by_kind,
        "by_hop": by_hop,
        "rss_mb_at_settled": {str(n): rss for n, rss in sorted(rss_at.items())},
        "rss_growth_pct": rss_growth(rss_at),
        "intents": n,
        "concurrency": options.concurrency,
        "processes": {k: v for k, v in options.counts.items() if v},
        "stage_overrides": options.stage_overrides,
        "accepted_per_s": round(n / accept_s),
        "settled_per_s": round(n / settle_s),
        "seconds_to_last_settled": round(settle_s, 3),
        "latency_ms": {
            "p50": round(percentile(latencies_s, 0.50) * 1000, 1),
            "p95": round(percentile(latencies_s, 0.95) * 1000, 1),
            "p99": round(percentile(latencies_s, 0.99) * 1000, 1),
            "max": round(latencies_s[-1] * 1000, 1),
        },
        "commits_per_intent": round(commits / n, 3),
        "write_transactions_per_intent": round((xid_after - xid_before) / n, 3),
        "ledger_batch_mean": (
            round(scrape_delta.ledger_sum / scrape_delta.ledger_count, 1) if scrape_delta.ledger_count else None
        ),
        "ledger_requests": int(scrape_delta.ledger_count),
        "ledger_request_ms_mean": (
            round(1000 * scrape_delta.ledger_seconds / scrape_delta.ledger_count, 1)
            if scrape_delta.ledger_count
            else None
        ),
        "gc_collections": {generation: int(n) for generation, n in sorted(scrape_delta.gc_collections.items())},
        "stage_batch_mean": {
            stage: round(scrape_delta.batch_sum[stage] / count, 1)
            for stage, count in sorted(scrape_delta.batch_count.items())
            if count
        },
        "stage_batch_ms_mean": {
            stage: round(1000 * scrape_delta.batch_seconds.get(stage, 0.0) / count, 1)
            for stage, count in sorted(scrape_delta.batch_count.items())
            if count
        },
        "cpu_s": cpu_delta(cpu_before, cpu_after),
        "cpu_window_s": round(cpu_to - cpu_from, 3),
        "reference_loop_ms": round((reference_before_ms + reference_after_ms) / 2, 1),
        "checks": {"all_settled": True, "streams_drained": True, "no_dead_letters": True, "ledger_ok": ledger_ok},
    }


# -- output ------------------------------------------------------------------------------------------


def _rss_growth_lines(row: dict[str, Any]) -> list[str]:
    growth = row["rss_growth_pct"]
    if not growth:
        return []
    over = {k: " OVER 10%" if v > RSS_GROWTH_PCT_MAX else "" for k, v in growth.items()}
    marks = ", ".join(f"{k} {v:+.1f}%{over[k]}" for k, v in sorted(growth.items()))
    points = sorted(row["rss_mb_at_settled"], key=int)
    return [f"   RSS growth       {marks} (from {points[0]} to {points[-1]} settled)"]


def _by_operation_lines(row: dict[str, Any]) -> list[str]:
    figures = row["by_operation"]
    if len(figures) < 2:
        return []
    parts = [
        f"{k} {v['settled']:,} at {v['settled_per_s']:,}/s, p50 {v['p50_ms']:.0f} ms, p99 {v['p99_ms']:.0f} ms"
        for k, v in figures.items()
    ]
    return ["   by operation     " + "; ".join(parts)]


def print_table(row: dict[str, Any]) -> None:
    latency = row["latency_ms"]
    cpu = row["cpu_s"]
    processes = " ".join(f"{k}={v}" for k, v in row["processes"].items())
    overrides = " ".join(f"{k}={v}" for k, v in row["stage_overrides"].items()) or "streams.yaml defaults"
    lines = [
        f"== {row['run']}: {row['intents']:,} intents, "
        + (
            f"concurrency {row['concurrency']}"
            if row["loop"] == "closed"
            else f"open loop at {row['offered_per_s']:g}/s (send lag p99 {row['send_lag_ms_p99']} ms)"
        ),
        f"   processes        {processes} (ledger: {row['ledger']})",
        f"   stages           {overrides}",
        f"   accepted/s       {row['accepted_per_s']:>8,}",
        f"   settled/s        {row['settled_per_s']:>8,}   (last SETTLED after {row['seconds_to_last_settled']:.2f} s)",
        f"   POST -> SETTLED  p50 {latency['p50']:.0f} ms   p95 {latency['p95']:.0f} ms   "
        f"p99 {latency['p99']:.0f} ms   max {latency['max']:.0f} ms",
        f"   PG commits       {row['commits_per_intent']:.2f} per intent "
        f"({row['write_transactions_per_intent']:.2f} write transactions per intent)",
        f"   ledger batch     {row['ledger_batch_mean'] if row['ledger_batch_mean'] is not None else '-'} "
        f"transfers per create_transfers ({row['ledger_requests']} requests, "
        f"{row['ledger_request_ms_mean'] if row['ledger_request_ms_mean'] is not None else '-'} ms each on average)",
        "   stage batch      " + "  ".join(f"{k} {v}" for k, v in row["stage_batch_mean"].items()) + " entries",
        "   stage batch time " + "  ".join(f"{k} {v}" for k, v in row["stage_batch_ms_mean"].items()) + " ms mean",
        "   GC collections   "
        + "  ".join(f"gen{k} {v:,}" for k, v in row["gc_collections"].items())
        + " (the scraped processes: all but the gateway)",
        f"   CPU seconds      {cpu[MACHINE]:.1f} busy in {row['cpu_window_s']:.1f} s "
        f"({cpu[MACHINE] / row['cpu_window_s']:.2f} of {psutil.cpu_count()} cores; "
        f"{1000 * cpu[MACHINE] / row['intents']:.2f} ms per intent; PM's fleet and servers "
        f"{1000 * pm_cpu_seconds(cpu) / row['intents']:.2f} ms)",
        "      " + ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if k != MACHINE),
        "   RSS MiB          " + ", ".join(f"{k} {v}" for k, v in sorted(row["rss_mb"].items())),
        *_rss_growth_lines(row),
        *_by_operation_lines(row),
        "   hops p50/p99 ms  "
        + "  ".join(f"{step} {f['p50_ms']:.0f}/{f['p99_ms']:.0f}" for step, f in row["by_hop"].items()),
        f"   machine speed    reference loop {row['reference_loop_ms']} ms (lower is faster; compare runs by it)",
        "   checks           "
        + ", ".join(f"{k} {'ok' if v else ('-' if v is None else 'FAILED')}" for k, v in row["checks"].items()),
    ]
    if "ratio_real_to_floor" in row:
        lines.append(f"   real / floor     {row['ratio_real_to_floor']:.2f} (settled/s)")
    print("\n".join(lines), flush=True)


# -- main --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(data_dir: Path) -> Iterator[tuple[str, str, bool]]:
    """(PostgreSQL server URL, Redis URL, embedded?): configured ones, or embedded ones for the block."""
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("PM_DATABASE_URL") or None
        redis_url = os.environ.get("PM_REDIS_URL") or None
        embedded = database_url is None
        if database_url is None:
            database_url = stack.enter_context(running_postgres(data_dir / "postgres"))
        if redis_url is None:
            redis_url = stack.enter_context(running_valkey(data_dir / "valkey"))
        yield database_url, redis_url, embedded


async def run_all(args: argparse.Namespace, server_url: str, redis_url: str, log_dir: Path) -> list[dict[str, Any]]:
    overrides: dict[str, Any] = {}
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.block_ms is not None:
        overrides["block_ms"] = args.block_ms
    if args.linger_ms is not None:
        overrides["linger_ms"] = args.linger_ms
    intents = args.intents if args.rate is None else round(args.rate * args.seconds)
    finish_timeout_s = args.timeout_s if args.timeout_s is not None else max(60.0, intents / 100)
    common = {
        "intents": intents,
        "rate_per_s": args.rate,
        "concurrency": args.concurrency,
        "senders": args.senders,
        "stage_overrides": overrides,
        "finish_timeout_s": finish_timeout_s,
        "stats_settle_s": args.stats_settle_s,
        "rss_checkpoints": args.rss_checkpoints,
        "mix": args.mix,
        "history": args.history,
    }
    databases: list[str] = []
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        for layout in args.layouts:
            counts = layout_counts(layout, args.processes)
            real = await _run_or_report(
                RunOptions(name=f"{layout} pipeline", layout=layout, handler=None, counts=counts,
                           log_dir=log_dir / layout, **common),
                server_url, redis_url, databases, failures,
            )  # fmt: skip
            if args.floor:
                floor = await _run_or_report(
                    RunOptions(name=f"{layout} floor", layout=layout, handler=FLOOR_HANDLER, counts=counts,
                               log_dir=log_dir / layout, **common),
                    server_url, redis_url, databases, failures,
                )  # fmt: skip
                if real is not None and floor is not None:
                    floor["ratio_real_to_floor"] = round(real["settled_per_s"] / floor["settled_per_s"], 3)
            for row in (real, floor if args.floor else None):
                if row is not None:
                    _emit(row, args.json)
                    rows.append(row)
    finally:
        if os.environ.get("PM_DATABASE_URL"):
            await _drop_databases(server_url, databases)
    if not args.json and len(rows) + len(failures) > 1:
        print_side_by_side(rows, failures)
    if failures:
        raise BenchError("; ".join(failures))
    return rows


async def _run_or_report(
    options: RunOptions, server_url: str, redis_url: str, databases: list[str], failures: list[str]
) -> dict[str, Any] | None:
    """One run; a failed one (e.g. a fleet that cannot keep an open loop's rate) is reported and the
    other layouts still run."""
    try:
        return await run_once(options, server_url, redis_url, databases)
    except BenchError as exc:
        progress(f"{options.name}: FAILED: {exc}")
        failures.append(f"{options.name}: {exc}")
        return None


def print_side_by_side(rows: list[dict[str, Any]], failures: list[str]) -> None:
    """One line per run, the figures that compare layouts (all measured in this one invocation)."""
    print("\n== side by side (this invocation, one machine state)")
    print(f"   {'run':<26} {'settled/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/intent':>13}"
          f" {'PM ms/intent':>12} {'RSS MiB':>8} {'ref loop ms':>11}")  # fmt: skip
    for row in rows:
        cpu_ms = 1000 * row["cpu_s"][MACHINE] / row["intents"]
        pm_ms = 1000 * pm_cpu_seconds(row["cpu_s"]) / row["intents"]
        rss = sum(row["rss_mb"].values())
        latency = row["latency_ms"]
        print(f"   {row['run']:<26} {row['settled_per_s']:>9,} {latency['p50']:>8.0f} {latency['p99']:>8.0f}"
              f" {cpu_ms:>13.2f} {pm_ms:>12.2f} {rss:>8.0f} {row['reference_loop_ms']:>11}")  # fmt: skip
    for failure in failures:
        print(f"   FAILED {failure}")


async def _drop_databases(server_url: str, names: list[str]) -> None:
    connection = await asyncpg.connect(server_url, timeout=10)
    try:
        for name in names:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close(timeout=10)


def _emit(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print_table(row)


def _mix_argument(text: str) -> Mix:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _raise_keyboard_interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=5000, help="P2P intents per run (N)")
    parser.add_argument("--concurrency", type=int, default=64, help="POSTs in flight at once (C)")
    parser.add_argument(
        "--processes", type=parse_counts, default=parse_counts(""),
        help="process counts per Procfile type, e.g. gateway=1,settlement=2 (default: one of each)",
    )  # fmt: skip
    parser.add_argument("--senders", type=int, default=1000, help="distinct paying users (funded first)")
    parser.add_argument("--batch-size", type=int, default=None, help="every stage's batch_size (streams.yaml)")
    parser.add_argument("--block-ms", type=int, default=None, help="every stage's block_ms (streams.yaml)")
    parser.add_argument("--linger-ms", type=int, default=None, help="every stage's linger_ms (streams.yaml)")
    parser.add_argument("--floor", action="store_true", help="also run the plumbing floor and print the ratio")
    parser.add_argument(
        "--layouts", type=parse_layouts, default=["one-per-type"],
        help=f"process layouts to run side by side, comma-separated: {', '.join(LAYOUTS)} (bench/layouts.py)",
    )  # fmt: skip
    parser.add_argument(
        "--rss-checkpoints", type=lambda text: tuple(int(n) for n in text.split(",") if n.strip()), default=(),
        help="settled counts at which to read each process type's RSS, e.g. 10000,100000 (prints the growth)",
    )  # fmt: skip
    parser.add_argument(
        "--mix", type=_mix_argument, default=(("p2p", 100),),
        help="the intents' kinds in percent, e.g. p2p=70,ipps=20,qp=10 (default p2p=100; bench/mix.py)",
    )  # fmt: skip
    parser.add_argument(
        "--history", type=int, default=HISTORY_INTENTS_DEFAULT,
        help=f"finished intents written to the database before the fleet starts (default {HISTORY_INTENTS_DEFAULT:,};"
        " bench/seed.py: a production database's plans and statistics; 0 for an empty database)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=None, help="open loop: intents per second (with --seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="open loop: how long to send at --rate")
    parser.add_argument("--timeout-s", type=float, default=None, help="bound on settling after the last 202")
    parser.add_argument("--stats-settle-s", type=float, default=STATS_SETTLE_S, help=argparse.SUPPRESS)
    parser.add_argument("--keep-logs", action="store_true", help="keep the fleet logs (printed path)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    if args.intents < 1 or args.concurrency < 1 or args.senders < 1:
        parser.error("--intents, --concurrency and --senders must be positive")
    if not 0 <= args.history <= HISTORY_INTENTS_MAX:
        parser.error(f"--history must be between 0 and {HISTORY_INTENTS_MAX:,}")
    if (args.rate is None) != (args.seconds is None) or (args.rate is not None and min(args.rate, args.seconds) <= 0):
        parser.error("--rate and --seconds go together, both positive")

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # stop the fleet and servers on SIGTERM too
    work_dir = Path(tempfile.mkdtemp(prefix="pm-bench-pipeline-"))
    failed = True
    try:
        with servers(work_dir / "data") as (server_url, redis_url, _):
            # The fleet runs on uvloop (PM_EVENT_LOOP); the client too, so it takes less of the shared cores.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run_all(args, server_url, redis_url, work_dir / "logs"))
        failed = False
        return 0
    except BenchError as exc:
        print(f"bench/pipeline.py: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/pipeline.py: interrupted; fleet and servers stopped", file=sys.stderr)
        return 130
    finally:
        if failed or args.keep_logs:
            print(f"bench/pipeline.py: fleet logs in {work_dir / 'logs'}", file=sys.stderr)
            shutil.rmtree(work_dir / "data", ignore_errors=True)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
